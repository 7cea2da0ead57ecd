"""benchmarks/exactness.py's verdicts: what counts as bit-identical between two hosts' records
(its runs are measured there, on real models; here only the comparison is checked)."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("exactness", ROOT / "benchmarks" / "exactness.py")
exactness = importlib.util.module_from_spec(spec)
spec.loader.exec_module(exactness)


def _record(losses, adapter="a1", items="i1", acc=0.5):
    return {"m": {"losses": [float.hex(x) for x in losses], "adapter_sha": adapter,
                  "scores": {"loglik": {"metrics": {"acc": acc, "acc_stderr": 0.1}, "items_sha": items}}}}


def test_identical_only_when_losses_adapter_and_items_all_agree():
    ref = _record([2.0, 1.5])
    assert exactness.compare(_record([2.0, 1.5]), ref)["m"] == {
        "identical": True, "losses_identical": True, "adapter_identical": True, "items_identical": True,
        "max_loss_diff": 0.0, "metric_diffs": {"loglik": {}}}
    moved = exactness.compare(_record([2.0, 1.5 + 2 ** -20], items="i2", acc=0.55), ref)["m"]
    assert not moved["identical"] and not moved["losses_identical"] and moved["adapter_identical"]
    assert moved["max_loss_diff"] == 2 ** -20 and abs(moved["metric_diffs"]["loglik"]["acc"] - 0.05) < 1e-12
    # same losses and scores, other adapter bytes: not identical
    assert not exactness.compare(_record([2.0, 1.5], adapter="a2"), ref)["m"]["identical"]
