"""The reproduction table: the paper's commonsense numbers beside a grid's, on synthetic records."""
import json
import re

import pandas as pd
import pytest

from lora_tsd.aggregate import reproduction, tables


def test_reference_file_holds_the_paper_table():
    ref = reproduction.load_reference()
    assert len(ref) == 11 * 9  # 11 rows x (8 tasks + avg)
    row = ref[(ref.model == "meta-llama/Meta-Llama-3-8B") & (ref.method == "lora_dash") & (ref["rank"] == "32")]
    assert row.set_index("task")["paper"].to_dict()["avg"] == 85.4
    assert set(ref["protocol"]) == {"generative"} and ref["source"].notna().all()
    for (model, method, rank), part in ref.groupby(["model", "method", "rank"]):
        tasks = part[part.task != "avg"]["paper"]
        assert tasks.mean() == pytest.approx(float(part[part.task == "avg"]["paper"].iloc[0]), abs=0.06), (model, method, rank)


def _record(path, task, acc, seed, method="lora_dash", rank=32, model="meta-llama/Meta-Llama-3-8B"):
    rec = {"model": model, "task": task, "family": "commonsense", "train_set": "commonsense170k",
           "method": method, "rank": rank, "seed": seed,
           "train": {"trainable_params": 1, "steps": 1, "final_loss": 1.0, "train_time_s": 1.0},
           "results": {"generative": {"metrics": {"acc": acc}, "n_test": 100}}}
    path.write_text(json.dumps(rec))
    return path


def test_matching_cells_get_paper_ours_gap_and_spread(tmp_path):
    files = [_record(tmp_path / "a.json", "boolq", 0.74, 0), _record(tmp_path / "b.json", "boolq", 0.76, 1),
             _record(tmp_path / "c.json", "piqa", 0.80, 0), _record(tmp_path / "d.json", "piqa", 0.82, 1),
             _record(tmp_path / "e.json", "piqa", 0.9, 0, model="other/model")]  # no reference cell
    tables.write(files, {}, {"commit": "c", "config_hash": "h", "data": "d"}, tmp_path / "lb.md",
                 tmp_path / "lb.csv", tmp_path / "lb.json")
    rows = pd.DataFrame(json.loads((tmp_path / "lb.json").read_text())["reproduction"]).set_index("task")
    # boolq: ours 75.00 ± 1.41 vs paper 75.3: gap -0.30, inside 2 std; piqa: 81.00 ± 1.41 vs 88.5: outside
    assert rows.loc["boolq", "paper"] == 75.3 and rows.loc["boolq", "mean"] == pytest.approx(75.0)
    assert rows.loc["boolq", "gap"] == pytest.approx(-0.3) and rows.loc["boolq", "within_seed_spread"] == "yes"
    assert rows.loc["piqa", "gap"] == pytest.approx(-7.5) and rows.loc["piqa", "within_seed_spread"] == "no"
    assert rows.loc["avg", "paper"] == 85.4 and rows.loc["avg", "mean"] == pytest.approx(78.0)
    assert set(rows["model"]) == {"meta-llama/Meta-Llama-3-8B"}
    md = re.sub(r" +", " ", (tmp_path / "lb.md").read_text())
    assert "## Reproduction" in md and "| LLaMA3-8B | lora_dash | 32 | boolq | 75.3 | 75.00 ± 1.41 | 2 | -0.30 | yes |" in md
    assert "Our numbers: every method at the grid's one shared setting (no sweep" in md
    # A sweep's tables say which setting the reproduction's numbers come from
    tables.write(files, {}, {"commit": "c", "config_hash": "h", "data": "d", "setting": "each method at lr=x1"},
                 tmp_path / "t.md", tmp_path / "t.csv", tmp_path / "t.json", selected={})
    assert "Our numbers: each method at lr=x1" in (tmp_path / "t.md").read_text()


def test_one_seed_cannot_say_and_no_match_adds_no_table(tmp_path):
    one = tables.write([_record(tmp_path / "a.json", "boolq", 0.70, 0)], {}, {"commit": "c", "config_hash": "h",
                                                                              "data": "d"}, tmp_path / "lb.md", tmp_path / "lb.csv", tmp_path / "lb.json")
    rows = json.loads((tmp_path / "lb.json").read_text())["reproduction"]
    assert [r["within_seed_spread"] for r in rows] == ["n/a (1 seed)"]
    tables.write([_record(tmp_path / "b.json", "boolq", 0.70, 0, model="x/y")], {}, {"commit": "c",
                                                                                     "config_hash": "h", "data": "d"}, tmp_path / "lb2.md", tmp_path / "lb2.csv", tmp_path / "lb2.json")
    assert "Reproduction" not in (tmp_path / "lb2.md").read_text()
    assert json.loads((tmp_path / "lb2.json").read_text())["reproduction"] == []
