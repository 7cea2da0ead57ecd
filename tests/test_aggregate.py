import json

import pandas as pd
import pytest

from lora_tsd import aggregate


def _record(path, method, acc, rank=None, seed=None):
    rec = {"model": "m", "task": "arc_easy", "method": method, "n_test": 100,
           "metrics": {"acc": acc, "acc_norm": acc - 0.1, "acc_stderr": 0.05}}
    if method != "base":
        rec.update(rank=rank, seed=seed, train={"trainable_params": 10 * rank, "steps": 5,
                                                "final_loss": 1.0, "train_time_s": 2.0, "peak_rss_mb": 100.0})
    path.write_text(json.dumps(rec))
    return path


def test_leaderboard_rows_summary_and_labels(tmp_path):
    files = [
        _record(tmp_path / "a.json", "lora", 0.60, rank=4, seed=0),
        _record(tmp_path / "b.json", "lora", 0.70, rank=4, seed=1),
        _record(tmp_path / "c.json", "lora", 0.65, rank=8, seed=0),
        _record(tmp_path / "base.json", "base", 0.50),
    ]
    stamp = {"commit": "abc123", "config_hash": "deadbeef", "data": "arc_easy: carved"}
    df = aggregate.write(files, {"seeds": [0, 1]}, stamp, tmp_path / "lb.md", tmp_path / "lb.csv",
                         tmp_path / "lb.json")
    assert list(df["method"]) == ["base", "lora", "lora", "lora"]
    csv = pd.read_csv(tmp_path / "lb.csv")
    assert len(csv) == 4 and csv["acc"].notna().all()
    summary = json.loads((tmp_path / "lb.json").read_text())["summary"]
    r4 = next(s for s in summary if s["method"] == "lora" and s["rank"] == "4")
    assert r4["acc_mean"] == pytest.approx(65.0)
    assert r4["acc_std"] == pytest.approx(7.0710678, rel=1e-6)  # sample std of 60 and 70
    md = (tmp_path / "lb.md").read_text()
    assert "lm-eval 0-shot log-likelihood" in md and "abc123" in md and "deadbeef" in md
    assert "65.00 ± 7.07" in md and "arc_easy: carved" in md
