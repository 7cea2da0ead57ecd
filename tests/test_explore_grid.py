"""End to end: the exploration of task-specific directions on the tiny models through the
snakemake CLI (in the smoke grid's workdir, so built models and task data are reused): full
fine-tuning once beside adapters on two train sets, each adapter's trace, rule `explore` to its
tables, figures and report page, read in a browser."""
import copy
import subprocess

import pandas as pd
import pytest

from grids import SMOKE
from grids import command as _cmd
from grids import env as _env
from grids import run as _snakemake

pytestmark = pytest.mark.e2e
NAME = "explore-smoke"
GRID = f"results/{NAME}"
CONFIG = {**copy.deepcopy(SMOKE), "name": NAME, "tasks": ["arc_easy", "ifeval"], "models": ["tiny-llama"],
          "methods": ["full", "lora", "lora_dash", "lora_dash_random"], "ranks": [4, 2],
          "train": {**SMOKE["train"], "steps": 6, "analysis_every": 2, "base_dtype": "float32"},
          "tsd": {**SMOKE["tsd"], "dash_t": 2}}


@pytest.fixture(scope="module")
def explore_grid(smoke_grid):
    workdir = smoke_grid[0]
    _snakemake(workdir, CONFIG, "explore.yaml")
    return workdir


def test_full_fine_tuning_trains_once_and_every_adapter_cell_is_measured_against_it(explore_grid):
    runs = explore_grid / GRID / "runs" / "tiny-llama"
    assert sorted(p.parent.name for p in runs.glob("*/full/*/s0")) == ["r2", "r2"]  # no rank: once per train set
    recall = pd.read_csv(explore_grid / GRID / "explore" / "tsd_recall.csv")
    assert set(zip(recall.train_set, recall.method, recall["rank"])) == {
        (t, m, r) for t in ("commonsense170k", "alpaca") for m in ("lora", "lora_dash", "lora_dash_random") for r in (2, 4)}
    assert sorted(set(recall.step)) == [2, 4, 6]
    assert recall[["recall", "accuracy"]].apply(lambda c: c.between(0, 1)).all().all()
    amp = pd.read_csv(explore_grid / GRID / "explore" / "tsd_amplification.csv")
    assert (amp[amp.method == "lora"].vs_lora == 1.0).all()
    overlap = pd.read_csv(explore_grid / GRID / "explore" / "tsd_task_overlap.csv")
    full = overlap[overlap.method == "full"]
    assert len(full) == 1 and set(full[["train_set_a", "train_set_b"]].iloc[0]) == {"alpaca", "commonsense170k"}
    ablation = pd.read_csv(explore_grid / GRID / "explore" / "tsd_ablation.csv")
    assert {"lora", "lora_dash", "lora_dash_random"} <= set(ablation.method)


def test_the_directions_page_states_each_question_with_the_papers_answer_and_ours(explore_grid, chromium):
    from browser import check_report

    text = (explore_grid / GRID / "report" / "directions.html").read_text()
    for question in ("Where do the true TSDs sit in the spectrum?", "How early does LoRA find them?",
                     "Does LoRA-Dash amplify them?", "Are they task-specific?", "Do the TSDs matter for the dash?"):
        assert question in text
    assert text.count("The paper:") == 5 and text.count("This grid:") == 5 and text.count("data:image/png") == 5
    assert "no full fine-tuning cell" not in text and "lora_dash r4, tiny-llama on alpaca" in text
    report = explore_grid / "explore-report.html"
    proc = subprocess.run(_cmd(explore_grid, CONFIG, "explore.yaml") + ["--report", str(report)], capture_output=True,
                          text=True, env=_env(), timeout=600)
    assert proc.returncode == 0 and "ERROR" not in proc.stderr, proc.stderr[-3000:]
    view = check_report(report, explore_grid / "explore-shots")
    assert view.problems() == []
    entry = next(e for e in view.entries if e.category == "Task-specific directions")
    assert entry.kind == "html" and "true TSDs" in entry.caption
    assert entry.text.startswith("Task-specific directions: explore-smoke") and "Where do the true TSDs sit" in entry.text
    assert len(entry.tables) == 6 and all(t.n_rows for t in entry.tables)
