"""End to end: a learning-rate sweep of the smoke grid through the snakemake CLI, to a selection
on validation rows, a tuned leaderboard and sensitivity figures (in the smoke grid's workdir,
so the built models and task data are reused)."""
import copy
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from grids import SMOKE
from grids import command as _cmd
from grids import env as _env
from grids import run as _snakemake

pytestmark = pytest.mark.e2e
NAME = "sweep-smoke"
GRID = f"results/{NAME}"
CONFIG = {**copy.deepcopy(SMOKE), "name": NAME, "tasks": ["arc_easy", "sst2"], "methods": ["lora", "lora_dash"],
          "sweep": {"lr": [3.0e-3, 1.0e-3]}, "family_sweep": {"glue": {"lr": [1.0e-2, 3.0e-2]}},
          "method_sweep": {"lora_dash": {"tsd.dash_s": [1]}}, "selection": {"val_rows": 12}}
LABELS = {("commonsense170k", "lora"): ["lr=0.003", "lr=0.001"], ("sst2", "lora"): ["lr=0.01", "lr=0.03"],
          ("commonsense170k", "lora_dash"): ["lr=0.003,tsd.dash_s=1", "lr=0.001,tsd.dash_s=1", "lr=0.001,tsd.dash_s=2"],
          ("sst2", "lora_dash"): ["lr=0.01,tsd.dash_s=1", "lr=0.03,tsd.dash_s=1", "lr=0.01,tsd.dash_s=2"]}
SHARED = {"commonsense": "lr=0.001", "glue": "lr=0.01"}


@pytest.fixture(scope="module")
def sweep_grid(smoke_grid):
    workdir = smoke_grid[0]
    _snakemake(workdir, CONFIG, "sweep.yaml")
    return workdir


def _records(root: Path, split: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / GRID / "runs").glob(f"*/*/*/r*/*/s*/{split}/*.json"))]


def test_cells_expand_over_the_candidates_with_the_swept_value_in_path_and_records(sweep_grid):
    runs = sweep_grid / GRID / "runs"
    for model, train_set in (("tiny-llama", "commonsense170k"), ("tiny-bert", "sst2")):
        for method in CONFIG["methods"]:
            found = sorted(p.name for p in (runs / model / train_set / method / "r4").iterdir())
            assert found == sorted(LABELS[(train_set, method)]), found
            for label in found:
                run = runs / model / train_set / method / "r4" / label / "s0"
                train = json.loads((run / "train.json").read_text())
                values = dict(kv.split("=") for kv in label.split(","))
                assert train["train_config"]["lr"] == float(values["lr"])
                if method == "lora_dash":  # a swept tsd option reaches the method's own options
                    assert train["tsd_config"]["dash_s"] == int(values["tsd.dash_s"])
    for rec in _records(sweep_grid, "eval"):
        assert rec["setting"].startswith(f"lr={rec['setting_values']['lr']!r}") and "split" not in rec


def test_validation_rows_are_disjoint_from_test_rows_and_from_training(sweep_grid):
    from lora_tsd.data.prepare import commonsense_row, read_jsonl

    for task in CONFIG["tasks"]:
        data = next(p for p in (sweep_grid / "resources" / "data").glob(f"*/{task}") if (p / "val.jsonl").exists())
        val, test, train = (read_jsonl(data / f"{s}.jsonl") for s in ("val", "test", "train"))
        assert len(val) == 12
        keys = lambda rows: {json.dumps(r, sort_keys=True) for r in rows}  # noqa: E731
        assert not keys(val) & keys(test) and not keys(val) & keys(train)
        if task == "arc_easy":  # nor among the rows the commonsense train set renders
            sets = [p for p in (sweep_grid / "resources" / "train_sets").glob("*/commonsense170k")
                    if data.parent.name in p.parent.name]
            trained = {r["instruction"] for r in read_jsonl(sets[0] / "train.jsonl")}
            assert not {commonsense_row(task, d)["instruction"] for d in val} & trained
    val_hashes = {(r["task"], h) for r in _records(sweep_grid, "val") for p in r["results"].values()
                  for h in p["items"]["doc_hash"]}
    test_hashes = {(r["task"], h) for r in _records(sweep_grid, "eval") for p in r["results"].values()
                   for h in p["items"]["doc_hash"]}
    assert val_hashes and test_hashes and not val_hashes & test_hashes


def test_selection_takes_the_best_mean_validation_score_recomputed_from_the_records(sweep_grid):
    record = json.loads((sweep_grid / GRID / "selection.json").read_text())
    scores = {}
    for rec in _records(sweep_grid, "val"):
        assert rec["split"] == "val"
        metric = ("loglik", "acc") if rec["family"] == "commonsense" else ("glue", "accuracy")
        key = (rec["family"], rec["method"], rec["setting"])
        scores.setdefault(key, []).append(100 * rec["results"][metric[0]]["metrics"][metric[1]])
    for cand in record["candidates"]:  # one task per family and one seed: the score is that record's
        assert cand["status"] == "ok"
        assert cand["score"] == pytest.approx(scores[(cand["family"], cand["method"], cand["setting"])][0])
    assert len(record["selections"]) == 4  # (family, method) x one rank
    for chosen in record["selections"]:
        labels = LABELS[("commonsense170k" if chosen["family"] == "commonsense" else "sst2", chosen["method"])]
        mine = {s: scores[(chosen["family"], chosen["method"], s)][0] for s in labels}
        tied = [s for s in labels if mine[s] == pytest.approx(max(mine.values()))]
        shared = SHARED[chosen["family"]] + (",tsd.dash_s=2" if chosen["method"] == "lora_dash" else "")
        assert chosen["setting"] == (shared if shared in tied else tied[0]), (mine, chosen)


def test_tuned_leaderboard_shows_each_method_at_its_selection_beside_the_shared_one(sweep_grid):
    record = json.loads((sweep_grid / GRID / "selection.json").read_text())
    chosen = {(s["family"], s["method"]): s["setting"] for s in record["selections"]}
    tuned = pd.read_csv(sweep_grid / GRID / "tuned" / "leaderboard.csv")
    trained = tuned[tuned.method != "base"]
    assert {(f, m, s) for f, m, s in zip(trained.family, trained.method, trained.setting)} == \
        {(f, m, s) for (f, m), s in chosen.items()}
    md = (sweep_grid / GRID / "tuned" / "leaderboard.md").read_text()
    assert md.startswith("# Tuned leaderboard") and "selected setting" in md
    for setting in chosen.values():
        assert setting in md
    shared = pd.read_csv(sweep_grid / GRID / "leaderboard.csv")
    shared = shared[shared.method != "base"]
    assert set(shared.setting) == {"lr=0.001", "lr=0.01", "lr=0.001,tsd.dash_s=2", "lr=0.01,tsd.dash_s=2"}
    assert "each method at its shared setting" in (sweep_grid / GRID / "leaderboard.md").read_text()
    paired = pd.read_csv(sweep_grid / GRID / "tuned" / "paired.csv")
    assert set(paired.method) == {"lora_dash"} and paired["diff"].notna().all()
    for family in ("commonsense", "glue"):
        png = sweep_grid / GRID / "plots" / family / "sensitivity.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sens = pd.read_csv(sweep_grid / GRID / "tuned" / "sensitivity.csv")
    assert set(sens.split) == {"validation", "test"} and len(sens) == 2 * 2 * (2 + 3)  # families x splits x settings


def test_editing_test_scores_replans_the_tables_but_never_the_selection(sweep_grid):
    """The selection's inputs hold no test record: after a test score changes, snakemake plans
    the tables again but not `select`."""
    target = next((sweep_grid / GRID / "runs").glob("tiny-llama/*/lora/r4/lr=0.003/s0/eval/arc_easy.json"))
    rec = json.loads(target.read_text())
    rec["results"]["loglik"]["metrics"]["acc"] = 1.0
    target.write_text(json.dumps(rec))
    os.utime(target)
    import subprocess

    out = subprocess.run(_cmd(sweep_grid, CONFIG, "sweep.yaml") + ["-n"], capture_output=True, text=True,
                         env=_env(), timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    planned = out.stdout.split("Job stats:")[1].split("total")[0]
    assert "tuned" in planned and "select" not in planned.replace("selection", "")


@pytest.mark.browser
def test_sweep_report_shows_the_tuned_page_and_sensitivity_figures_in_a_browser(sweep_grid, chromium):
    import subprocess

    from browser import check_report

    report = sweep_grid / "sweep-report.html"
    _snakemake(sweep_grid, CONFIG, "sweep.yaml")  # the tables again after the edited test record
    proc = subprocess.run(_cmd(sweep_grid, CONFIG, "sweep.yaml") + ["--report", str(report)], capture_output=True,
                          text=True, env=_env(), timeout=600)
    assert proc.returncode == 0 and "ERROR" not in proc.stderr, proc.stderr[-3000:]
    view = check_report(report, sweep_grid / "sweep-shots")
    assert view.problems() == []
    assert {"commonsense", "glue", "Leaderboard", "Tuned"} <= set(view.categories)
    for family in ("commonsense", "glue"):
        figure = [e for e in view.entries if e.category == family and e.kind == "image"
                  and Path(e.path).stem == "sensitivity"]
        assert len(figure) == 1 and figure[0].image_loaded and figure[0].caption
    tuned = next(e for e in view.entries if e.category == "Tuned")
    assert tuned.kind == "html" and "selected setting" in tuned.tables[0].header
    assert "sweep-smoke tuned leaderboard" in tuned.text
    assert tuned.tables[0].n_rows == len(CONFIG["methods"]) + 1  # each method at its selection, and base


def test_select_by_loss_reselects_from_the_runs_hold_out_losses_without_retraining(sweep_grid):
    """select_by: loss reads each cell's train.json (its train.val_size hold-out loss where the
    run ended, the kept adapter's with keep_best): only the selection and the tables rerun."""
    config = {**CONFIG, "selection": {**CONFIG["selection"], "select_by": "loss"}}
    proc = _snakemake(sweep_grid, config, "sweep-loss.yaml")
    planned = (proc.stdout + proc.stderr).split("Job stats:")[1].split("total")[0]
    assert "select" in planned and "train" not in planned and "validate" not in planned
    record = json.loads((sweep_grid / GRID / "selection.json").read_text())
    assert record["select_by"] == "loss"
    losses = {}
    for path in (sweep_grid / GRID / "runs").glob("*/*/*/r4/*/s0/train.json"):
        run = json.loads(path.read_text())
        if run["train_set"] not in ("commonsense170k", "sst2"):
            continue
        at = dict((int(s), v) for s, v in run["val_losses"])
        losses[(run["method"], path.parent.parent.name)] = at[run["kept_step"] or max(at)]
    for chosen in record["selections"]:
        family_sets = "commonsense170k" if chosen["family"] == "commonsense" else "sst2"
        mine = {s: losses[(chosen["method"], s)] for s in LABELS[(family_sets, chosen["method"])]}
        assert chosen["score"] == pytest.approx(min(mine.values()))
        assert mine[chosen["setting"]] == pytest.approx(min(mine.values()))


def test_a_baseline_trained_by_its_own_rule_expands_over_the_candidates_too(tmp_path):
    """An external method's rule writes under external_run(), whose pattern carries {setting}:
    its cells expand like the built-in ones (a dry run: the plan, with each job's lr)."""
    import subprocess

    import yaml

    from grids import ROOT

    plus = yaml.safe_load((ROOT / "configs" / "lora-plus.yaml").read_text())["external_methods"]
    config = {**CONFIG, "methods": ["lora", "lora_plus"], "external_methods": plus, "method_sweep": {}}
    out = subprocess.run(_cmd(tmp_path, config, "plus.yaml") + ["-n", "-p"], capture_output=True, text=True,
                         env=_env(), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = [block for block in out.stdout.split("\n\n") if block.strip().startswith("rule train_lora_plus")
            or "rule train_lora_plus:" in block]
    folders = sorted({line.split("lora_plus/r4/")[1].split("/")[0] for block in jobs for line in block.splitlines()
                      if "output:" in line and "lora_plus/r4/" in line})
    assert folders == sorted(LABELS[("commonsense170k", "lora")] + LABELS[("sst2", "lora")])
