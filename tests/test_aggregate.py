import json
import re

import pandas as pd
import pytest

from lora_tsd.aggregate import tables


def _record(path, method, task, results, rank=None, seed=None, family="commonsense"):
    rec = {"model": "m", "task": task, "family": family, "train_set": "commonsense170k", "method": method,
           "results": results}
    if method != "base":
        rec.update(rank=rank, seed=seed, train={"trainable_params": 10 * rank, "steps": 5,
                                                "final_loss": 1.0, "train_time_s": 2.0, "peak_rss_mb": 100.0})
    path.write_text(json.dumps(rec))
    return path


def _cs(acc, gen):
    return {"loglik": {"metrics": {"acc": acc, "acc_norm": acc - 0.1, "acc_stderr": 0.05}, "n_test": 100},
            "generative": {"metrics": {"acc": gen, "acc_stderr": 0.04}, "n_test": 100}}


@pytest.fixture
def board(tmp_path):
    files = [
        _record(tmp_path / "a.json", "lora", "arc_easy", _cs(0.60, 0.30), rank=4, seed=0),
        _record(tmp_path / "b.json", "lora", "arc_easy", _cs(0.70, 0.50), rank=4, seed=1),
        _record(tmp_path / "c.json", "lora", "piqa", _cs(0.80, 0.40), rank=4, seed=0),
        _record(tmp_path / "d.json", "lora", "piqa", _cs(0.90, 0.60), rank=4, seed=1),
        _record(tmp_path / "base.json", "base", "arc_easy", _cs(0.50, 0.0)),
        _record(tmp_path / "base2.json", "base", "piqa", _cs(0.55, 0.0)),
        _record(tmp_path / "g.json", "lora", "sst2", {"glue": {"metrics": {"accuracy": 0.9}, "n_test": 50}},
                rank=4, seed=0, family="glue"),
    ]
    stamp = {"commit": "abc123", "config_hash": "deadbeef", "data": "arc_easy: carved"}
    df = tables.write(files, {"seeds": [0, 1]}, stamp, tmp_path / "lb.md", tmp_path / "lb.csv",
                      tmp_path / "lb.json")
    return df, tmp_path


def test_long_records_have_one_row_per_metric_scaled_to_percent(board):
    df, tmp_path = board
    csv = pd.read_csv(tmp_path / "lb.csv")
    assert len(csv) == len(df) == 6 * 3 + 1  # 6 commonsense records x (acc, acc_norm, gen acc) + 1 glue
    row = csv[(csv.task == "arc_easy") & (csv.protocol == "loglik") & (csv.metric == "acc") & (csv.seed == 0)]
    assert row["value"].item() == pytest.approx(60.0) and row["stderr"].item() == pytest.approx(5.0)
    for _, part in df.groupby(["family", "protocol"]):  # base rows first in each table
        methods = list(part["method"])
        assert methods == sorted(methods, key=lambda m: m != "base")


def test_summary_means_stds_and_per_seed_averages(board):
    _, tmp_path = board
    summary = pd.DataFrame(json.loads((tmp_path / "lb.json").read_text())["summary"])
    pick = lambda task, protocol: summary[(summary.method == "lora") & (summary.task == task)  # noqa: E731
                                          & (summary.protocol == protocol) & (summary.metric == "acc")].iloc[0]
    assert pick("arc_easy", "loglik")["mean"] == pytest.approx(65.0)
    assert pick("arc_easy", "loglik")["std"] == pytest.approx(7.0710678, rel=1e-6)  # sample std of 60, 70
    avg = pick("avg", "loglik")  # seed 0: (60+80)/2 = 70, seed 1: (70+90)/2 = 80
    assert avg["mean"] == pytest.approx(75.0) and avg["std"] == pytest.approx(7.0710678, rel=1e-6)
    assert pick("avg", "generative")["mean"] == pytest.approx(45.0)


def test_markdown_has_a_labelled_table_per_family_and_protocol(board):
    _, tmp_path = board
    md = (tmp_path / "lb.md").read_text()
    for heading in ("## commonsense — loglik", "## commonsense — generative", "## glue — glue"):
        assert heading in md
    assert md.index("## commonsense — loglik") < md.index("## commonsense — generative") < md.index("## glue")
    assert "lm-eval 0-shot log-likelihood" in md and "first answer word" in md and "evaluate's GLUE" in md
    assert "abc123" in md and "deadbeef" in md and "arc_easy: carved" in md
    assert "65.00 ± 7.07" in md and "75.00 ± 7.07" in md and "90.00" in md
    loglik = md.split("## commonsense — loglik")[1].split("##")[0]
    assert loglik.index("| base") < loglik.index("| lora")


def test_a_missing_task_or_seed_shows_as_missing_and_is_never_averaged_over(tmp_path):
    """A partial set of records: lora seed 1 lacks piqa, dora has no piqa at all."""
    files = [
        _record(tmp_path / "a.json", "lora", "arc_easy", _cs(0.60, 0.30), rank=4, seed=0),
        _record(tmp_path / "b.json", "lora", "arc_easy", _cs(0.70, 0.50), rank=4, seed=1),
        _record(tmp_path / "c.json", "lora", "piqa", _cs(0.80, 0.40), rank=4, seed=0),
        _record(tmp_path / "d.json", "dora", "arc_easy", _cs(0.40, 0.20), rank=4, seed=0),
        _record(tmp_path / "e.json", "dora", "arc_easy", _cs(0.50, 0.20), rank=4, seed=1),
        _record(tmp_path / "base.json", "base", "arc_easy", _cs(0.50, 0.0)),
        _record(tmp_path / "base2.json", "base", "piqa", _cs(0.55, 0.0)),
    ]
    stamp = {"commit": "c", "config_hash": "h", "data": "d"}
    tables.write(files, {}, stamp, tmp_path / "lb.md", tmp_path / "lb.csv", tmp_path / "lb.json")
    summary = pd.DataFrame(json.loads((tmp_path / "lb.json").read_text())["summary"])
    lora_avg = summary[(summary.method == "lora") & (summary.task == "avg") & (summary.protocol == "loglik")
                       & (summary.metric == "acc")]
    # only seed 0 has both tasks: its average (60 + 80) / 2, not seed 1's lone arc_easy folded in
    assert lora_avg["seeds"].item() == 1 and lora_avg["mean"].item() == pytest.approx(70.0)
    assert summary[(summary.method == "dora") & (summary.task == "avg")].empty
    loglik = re.sub(r" +", " ", (tmp_path / "lb.md").read_text().split("## commonsense — loglik")[1].split("##")[0])
    lora = next(line for line in loglik.splitlines() if line.startswith("| m | lora "))
    dora = next(line for line in loglik.splitlines() if line.startswith("| m | dora "))
    assert "| 65.00 ± 7.07 |" in lora and "| 80.00 (1 of 2 seeds) |" in lora and "| 70.00 (1 of 2 seeds) |" in lora
    assert "| 45.00 ± 7.07 |" in dora and dora.count("| missing |") >= 2  # piqa acc, acc_norm and the average
    base = next(line for line in loglik.splitlines() if line.startswith("| m | base "))
    assert "seeds" not in base and "missing" not in base  # the base model has one, seedless, record
