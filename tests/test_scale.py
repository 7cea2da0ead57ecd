"""What 8B models on GPUs need, checked on CPU with the tiny Llama: frozen weights in bf16 with
everything that trains in float32, gradient checkpointing that leaves gradients unchanged,
one layer's SVD at a time, bf16 scoring with the adapter unmerged, and data-parallel cells
(2 gloo processes) whose loss curve is the single-process one at the same global batch."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import weakref

import pytest
import torch
from peft import PeftModel

from lora_tsd import lowrank, models
from lora_tsd.methods import hooks, registry
from lora_tsd.pipeline import config
from lora_tsd.tiny import make_llama, make_tokenizer
from lora_tsd.training import cell, collectives, launch

TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]
TSD = {"dash_t": 3, "dash_s": 2, "svd_dtype": "float32", "init_estimate": "warmup", "init_steps": 2,
       "init_scale": "singular", "init_residualise": True}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The tiny Llama saved as a model folder (subprocesses load it like any checkpoint)."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    make_llama(vocab_size=1000).save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


def _run(model_dir, data_dir, out, cfg, method="lora_dash", tsd=TSD):
    return cell.run("tiny-llama", str(model_dir), "commonsense170k", data_dir, method, 4, 0, cfg,
                    out / "adapter", out / "train.json", tsd_cfg=dict(tsd), out_analysis=out / "analysis.npz")


# --- bf16 base weights

def test_auto_is_bf16_only_on_a_bf16_gpu_and_never_for_weights_that_train():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert models.weights_dtype("auto", cpu) == torch.float32
    assert models.weights_dtype(None, cpu) == torch.float32
    assert models.weights_dtype("bfloat16", cpu) == torch.bfloat16
    assert models.weights_dtype("auto", gpu, trains_weights=True) == torch.float32
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        assert models.weights_dtype("auto", gpu) == torch.bfloat16


@pytest.mark.parametrize("method", ["lora", "lora_dash", "lora_tsd", "pissa", "dora"])
def test_bf16_base_weights_train_float32_adapters(method, model_dir, data_dir, tmp_path, train_cfg):
    cfg = {**train_cfg, "steps": 8, "base_dtype": "bfloat16"}
    seen = {}
    real_fit = cell.fit  # the loop as the cell calls it

    def spy(model, *a, **kw):  # the model as training sees it
        frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
        trained = {n: p.dtype for n, p in model.named_parameters() if p.requires_grad}
        seen.update(frozen=frozen, trained=trained)
        return real_fit(model, *a, **kw)

    cell.fit = spy
    try:
        metrics = _run(model_dir, data_dir, tmp_path, cfg, method)
    finally:
        cell.fit = real_fit
    assert seen["frozen"] == {torch.bfloat16}
    assert set(seen["trained"].values()) == {torch.float32}
    if method in ("lora_dash", "lora_tsd"):
        assert any(n.endswith("lora_dash.default.d") for n in seen["trained"])
    assert metrics["base_dtype"] == "bfloat16" and metrics["steps"] == 8
    assert metrics["losses"][-1] < metrics["losses"][0]
    # the exported adapter is float32 and loads onto the float32 base unchanged
    model, _ = models.load_for_eval(str(model_dir), tmp_path / "adapter", dtype=torch.float32)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_full_fine_tuning_refuses_bf16_weights(train_cfg):
    cfg = {"methods": ["lora", "full"], "train": {**train_cfg, "base_dtype": "bfloat16", "steps": 40}}
    problems = config._consistency_problems(cfg)
    assert any("train.base_dtype" in p and "'full'" in p and "auto, float32" in p for p in problems)
    with pytest.raises(ValueError, match="train.base_dtype"):
        cell.base_dtype({"base_dtype": "bfloat16"}, "full", "causal", torch.device("cpu"))
    assert cell.base_dtype({"base_dtype": "auto"}, "full", "causal", torch.device("cpu")) == torch.float32


def test_bf16_scoring_keeps_the_adapter_unmerged_and_close_to_float32(model_dir, data_dir, tmp_path, train_cfg):
    _run(model_dir, data_dir, tmp_path, {**train_cfg, "steps": 6}, "lora_dash")
    ids = make_tokenizer()(["Question: the sky is red. Which colour?\nAnswer: red"], return_tensors="pt")["input_ids"]
    merged, _ = models.load_for_eval(str(model_dir), tmp_path / "adapter", dtype=torch.float32)
    side, _ = models.load_for_eval(str(model_dir), tmp_path / "adapter", dtype=torch.bfloat16)
    assert not isinstance(merged, PeftModel) and not isinstance(side, PeftModel)
    branches = [m for m in side.modules() if isinstance(m, lowrank.LowRankLinear)]
    assert len(branches) == len(TARGETS) * side.config.num_hidden_layers  # every adapted layer, unmerged
    assert {b.up.dtype for b in branches} == {b.down.dtype for b in branches} == {torch.bfloat16}
    assert {p.dtype for p in side.parameters()} == {torch.bfloat16}
    base = models.load_for_eval(str(model_dir), None, dtype=torch.bfloat16)[0]
    with torch.no_grad():
        full, half, untuned = merged(ids).logits, side(ids).logits.float(), base(ids).logits.float()
    assert torch.allclose(full, half, atol=0.1 * full.abs().max()), (full - half).abs().max()
    assert (half - untuned).abs().max() > 2 * (full - half).abs().max()  # the update is there, not rounded away
    assert (full.argmax(-1) == half.argmax(-1)).float().mean() > 0.9


# --- gradient checkpointing

def test_gradient_checkpointing_leaves_the_loss_curve_unchanged(model_dir, data_dir, tmp_path, train_cfg):
    cfg = {**train_cfg, "steps": 10, "lora_dropout": 0.1}  # dropout masks are replayed, not redrawn
    plain = _run(model_dir, data_dir, tmp_path / "plain", cfg)
    ckpt = _run(model_dir, data_dir, tmp_path / "ckpt", {**cfg, "gradient_checkpointing": True})
    assert ckpt["losses"] == pytest.approx(plain["losses"], rel=1e-5, abs=1e-6)
    assert ckpt["grad_norms"] == pytest.approx(plain["grad_norms"], rel=1e-4, abs=1e-6)
    assert "gradient_checkpointing" in config.RESULT_NEUTRAL  # so it reruns nothing


def test_gradient_checkpointing_is_on_in_the_layers(tiny_model):
    model = registry.attach("lora", tiny_model, 4, {"lora_alpha_ratio": 2, "lora_dropout": 0.0}, TARGETS)
    models.checkpoint_activations(model)
    assert model.get_base_model().model.layers[0].gradient_checkpointing


# --- SVDs: one layer at a time, where the model is

@pytest.mark.parametrize("method", ["lora_dash", "lora_tsd", "milora"])
def test_no_two_layer_svds_are_alive_at_once(method, model_dir, data_dir, tmp_path, train_cfg, monkeypatch):
    alive, most = [], []
    real = hooks.Context.svd_of

    def tracked(self, name, layer):
        most.append(sum(r() is not None for r in alive))  # SVDs still alive when the next is fetched
        dec = real(self, name, layer)
        alive.append(weakref.ref(dec.U))
        return dec

    monkeypatch.setattr(hooks.Context, "svd_of", tracked)
    _run(model_dir, data_dir, tmp_path, {**train_cfg, "steps": 6}, method)
    phases = {"lora_dash": 2, "lora_tsd": 3, "milora": 2}[method]  # init / switch, and the end's analysis
    assert len(most) == phases * 2 * len(TARGETS)
    assert max(most) == 0


# --- data-parallel cells

def _launch(model_dir, data_dir, out, cfg, processes, method="lora_dash"):
    args = dict(model_name="tiny-llama", model_src=str(model_dir), train_set="commonsense170k",
                data_dir=str(data_dir), method=method, rank=4, seed=0, cfg=cfg, out_adapter=str(out / "adapter"),
                out_metrics=str(out / "train.json"), tsd_cfg=dict(TSD), out_analysis=str(out / "analysis.npz"))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train.log", "w") as log:
        launch.launch(processes, args, out / "launch.json", out=log)
    return json.loads((out / "train.json").read_text())


def _adapter(folder):
    from safetensors.torch import load_file

    return load_file(folder / "adapter" / "adapter_model.safetensors")


@pytest.mark.torchrun
@pytest.mark.parametrize("batch_size,micro", [(4, None), (5, 2)])
def test_two_processes_give_the_single_process_loss_curve(batch_size, micro, model_dir, data_dir, tmp_path,
                                                          train_cfg):
    # No dropout: each process draws its own masks, so only then are the curves the same.
    cfg = {**train_cfg, "steps": 8, "lora_dropout": 0.0, "batch_size": batch_size, "micro_batch_size": micro}
    one = _run(model_dir, data_dir, tmp_path / "one", cfg)
    two = _launch(model_dir, data_dir, tmp_path / "two", {**cfg, "gpus": 2}, 2)
    assert two["processes"] == 2 and one["processes"] == 1
    assert two["switch_step"] == one["switch_step"] == 3
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5, abs=1e-6)
    assert two["grad_norms"] == pytest.approx(one["grad_norms"], rel=1e-4, abs=1e-6)
    a, b = _adapter(tmp_path / "one"), _adapter(tmp_path / "two")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    assert (tmp_path / "two" / "analysis.npz").exists()
    assert not (tmp_path / "two" / "checkpoint").exists()


@pytest.mark.torchrun
def test_a_killed_data_parallel_cell_resumes_to_the_same_curve(model_dir, data_dir, tmp_path, train_cfg):
    cfg = {**train_cfg, "steps": 60, "lora_dropout": 0.0, "checkpoint_every": 5, "gpus": 2}
    whole = _launch(model_dir, data_dir, tmp_path / "whole", cfg, 2)

    out = tmp_path / "killed"
    code = (f"import json, sys; from pathlib import Path; from lora_tsd.training import launch; "
            f"a = json.loads(Path(sys.argv[1]).read_text()); "
            f"launch.launch(2, a, Path(sys.argv[1]).with_name('launch.json'))")
    out.mkdir()
    spec = out / "args.json"
    spec.write_text(json.dumps(dict(model_name="tiny-llama", model_src=str(model_dir), train_set="commonsense170k",
                                    data_dir=str(data_dir), method="lora_dash", rank=4, seed=0, cfg=cfg,
                                    out_adapter=str(out / "adapter"), out_metrics=str(out / "train.json"),
                                    tsd_cfg=dict(TSD))))
    proc = subprocess.Popen([sys.executable, "-c", code, str(spec)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / "checkpoint" / "state.pt"
    deadline = time.time() + 300
    while not state.exists():
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and torchrun; the workers die with torchrun
    proc.wait()
    for _ in range(100):  # no worker lives on to finish (or overwrite) the run
        left = subprocess.run(["pgrep", "-f", str(out / "launch.json")], capture_output=True, text=True).stdout
        if not left:
            break
        time.sleep(0.1)
    assert not left, f"orphaned workers: {left}"
    assert not (out / "train.json").exists()

    resumed = _launch(model_dir, data_dir, out, cfg, 2)
    assert resumed["resumed_from_step"] >= 5
    assert resumed["losses"] == pytest.approx(whole["losses"], rel=1e-5, abs=1e-6)


def test_more_processes_than_rows_is_rejected(train_cfg, monkeypatch):
    cfg = {"methods": ["lora"], "train": {**train_cfg, "gpus": 8, "batch_size": 4}}
    assert any("train.gpus" in p and "1 to train.batch_size" in p for p in config._consistency_problems(cfg))
    monkeypatch.setattr(collectives, "world_size", lambda: 8)  # the split alone, without a process group
    with pytest.raises(ValueError, match="train.batch_size >= train.gpus"):
        collectives.my_rows(4)


def test_rows_split_contiguously_and_cover_the_batch(monkeypatch):
    monkeypatch.setattr(collectives, "world_size", lambda: 3)
    shares = []
    for r in range(3):
        monkeypatch.setattr(collectives, "process_rank", lambda r=r: r)
        shares.append(collectives.my_rows(8))
    assert [(s.start, s.stop) for s in shares] == [(0, 3), (3, 6), (6, 8)]


@pytest.mark.e2e
@pytest.mark.torchrun
def test_the_workflow_trains_a_cell_over_two_processes(tmp_path):
    """`train.gpus: 2` through snakemake: the rule asks for 2 GPUs and its script launches torchrun."""
    from grids import SMOKE
    from grids import run as _snakemake

    cfg = {**SMOKE, "name": "ddp", "models": ["tiny-llama"], "tasks": ["arc_easy"], "methods": ["lora_dash"],
           "train": {**SMOKE["train"], "gpus": 2}, "eval": {**SMOKE["eval"], "protocols": ["loglik"]}}
    proc = _snakemake(tmp_path, cfg)
    assert re.search(r"gpu=2", proc.stdout + proc.stderr)  # the job's resources
    run = tmp_path / "results" / "ddp" / "runs" / "tiny-llama" / "commonsense170k" / "lora_dash" / "r4" / "s0"
    metrics = json.loads((run / "train.json").read_text())
    assert metrics["processes"] == 2 and metrics["steps"] == 4
    assert json.loads((run / "eval" / "arc_easy.json").read_text())["results"]["loglik"]["metrics"]["acc"] >= 0
    assert not (run / "launch.json").exists()


FAILS_ON_RANK_1 = """
import json, sys
from pathlib import Path
from lora_tsd.training import cell, collectives
real = cell._run_cell
def flaky(*a, **k):
    if collectives.process_rank() == 1:
        raise RuntimeError("rank 1 fails")
    return real(*a, **k)
cell._run_cell = flaky
cell.run(**json.loads(Path(sys.argv[1]).read_text()))
"""


@pytest.mark.torchrun
def test_one_failing_process_ends_the_cell_instead_of_hanging(model_dir, data_dir, tmp_path, train_cfg):
    """Rank 0 is inside a collective when rank 1 fails: rank 1 must exit (not wait at a barrier)."""
    (tmp_path / "worker.py").write_text(FAILS_ON_RANK_1)
    out = tmp_path / "cell"
    (tmp_path / "args.json").write_text(json.dumps(dict(
        model_name="tiny-llama", model_src=str(model_dir), train_set="commonsense170k", data_dir=str(data_dir),
        method="lora", rank=4, seed=0, cfg={**train_cfg, "steps": 200, "gpus": 2},
        out_adapter=str(out / "adapter"), out_metrics=str(out / "train.json"))))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(tmp_path / "worker.py"), str(tmp_path / "args.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "rank 1 fails" in proc.stdout + proc.stderr
    assert not (out / "train.json").exists()
