"""End to end: the snakemake CLI on the smoke config, in a temp directory."""
import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from grids import SMOKE
from grids import command as _cmd
from grids import env as _env
from grids import run as _snakemake

GRID = f"results/{SMOKE['name']}"
pytestmark = pytest.mark.e2e


def _smoke_key() -> str:
    """The smoke grid's data key: other grids in the shared workdir (the sweep tests') have their own."""
    from lora_tsd.pipeline.config import short_hash

    return f"{SMOKE['data_source']}-{short_hash([SMOKE['data_source'], SMOKE['split']])}"


def _one(root: Path, pattern: str) -> Path:
    """The single file a glob names (task data and train sets live under a settings key)."""
    found = list(root.glob(pattern))
    assert len(found) == 1, (pattern, found)
    return found[0]


def _jobs(output: str) -> dict[str, int]:
    """The 'Job stats' table snakemake prints before running."""
    block = output.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M)}


@pytest.fixture(scope="module")
def workdir(smoke_grid):
    return smoke_grid[0]


@pytest.fixture(scope="module")
def smoke_run(smoke_grid):
    return smoke_grid[1]


FAMILY_PROTOCOLS = {"commonsense": {"loglik": ["acc", "acc_norm"], "generative": ["acc"]},
                    "glue": {"glue": None}, "instruction": {"ifeval": [
                        "prompt_level_strict_acc", "inst_level_strict_acc",
                        "prompt_level_loose_acc", "inst_level_loose_acc"]}}
GLUE_METRICS = {"sst2": ["accuracy"], "rte": ["accuracy"]}


def test_every_family_has_a_numeric_row_per_cell_task_and_metric_plus_base(workdir, smoke_run):
    from lora_tsd.data.tasks import TASKS

    df = pd.read_csv(workdir / GRID / "leaderboard.csv")
    assert df["value"].notna().all()
    for task in SMOKE["tasks"]:
        family = TASKS[task].family
        model = "tiny-bert" if family == "glue" else "tiny-llama"
        for protocol, names in FAMILY_PROTOCOLS[family].items():
            part = df[(df.task == task) & (df.protocol == protocol)]
            assert set(part["model"]) == {model}, (task, protocol)
            for metric in names or GLUE_METRICS[task]:
                rows = part[part.metric == metric]
                cells = rows[rows.method != "base"]
                expected = sorted((m, r, s) for m in SMOKE["methods"] for r in SMOKE["ranks"] for s in SMOKE["seeds"])
                assert sorted(zip(cells["method"], cells["rank"], cells["seed"])) == expected, (task, metric)
                assert (rows.method == "base").sum() == 1, (task, metric)
                assert rows["value"].between(-100, 100).all()
    loglik = df[(df.protocol == "loglik") & (df.metric == "acc")]
    assert (loglik["n_test"] == SMOKE["eval"]["limit"]).all()
    md = (workdir / GRID / "leaderboard.md").read_text()
    for heading in ("commonsense — loglik", "commonsense — generative", "glue — glue", "instruction — ifeval"):
        assert f"## {heading}" in md
    assert "tiny-llama" in md and "tiny-bert" in md and "Train sets: commonsense170k" in md


@pytest.mark.parametrize("method,export_rank", [("lora", 4), ("lora_dash", 6), ("lora_init", 8), ("lora_tsd", 10)])
def test_run_folders_hold_a_standard_peft_adapter_metrics_and_analysis(workdir, smoke_run, method, export_rank):
    run = workdir / f"{GRID}/runs/tiny-llama/commonsense170k/{method}/r4/s0"
    adapter_cfg = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == export_rank and adapter_cfg["peft_type"] == "LORA"
    assert (run / "adapter" / "adapter_model.safetensors").exists()
    metrics = json.loads((run / "train.json").read_text())
    assert metrics["rank"] == 4 and len(metrics["losses"]) == SMOKE["train"]["steps"]
    assert metrics["train_set"] == "commonsense170k"
    assert metrics["packages"]["torch"].startswith("2.13.0") and "tokens_per_s" in metrics
    assert not (run / "checkpoint").exists()  # removed once the run finished
    assert metrics["n_val_examples"] == SMOKE["train"]["val_size"]
    assert [s for s, _ in metrics["val_losses"]] == [2, 4] and metrics["kept_step"] in (2, 4)
    assert len(metrics["grad_norms"]) == SMOKE["train"]["steps"]
    assert sorted(p.name for p in (run / "eval").glob("*.json")) == ["arc_easy.json", "piqa.json"]
    import numpy as np

    arrays = np.load(run / "tsd_analysis.npz")
    q = "model.layers.0.self_attn.q_proj"
    assert arrays[f"{q}|rates_end"].shape == arrays[f"{q}|singular_values"].shape == (64,)
    if method in ("lora_dash", "lora_tsd"):
        assert arrays[f"{q}|indices_switch"].shape == (SMOKE["tsd"]["dash_s"],)
        assert metrics["switch_step"] == int(SMOKE["tsd"]["dash_t"] * SMOKE["train"]["steps"])
    glue = workdir / f"{GRID}/runs/tiny-bert/sst2/{method}/r4/s0"
    glue_cfg = json.loads((glue / "adapter" / "adapter_config.json").read_text())
    assert glue_cfg["task_type"] == "SEQ_CLS" and "classifier" in glue_cfg["modules_to_save"]


def test_the_svd_stage_runs_once_per_model_and_dtype_and_cells_after_it_compute_no_svd(workdir, smoke_run):
    # tiny-llama's weights in config.yaml's base_dtype (bfloat16), the tiny BERT's in float32
    assert _jobs(smoke_run.stdout + smoke_run.stderr).get("svd_cache") == 2
    manifests = {m.parent.name: json.loads(m.read_text()) for m in [
        workdir / "resources/svd/tiny-llama/bfloat16-float32.json", workdir / "resources/svd/tiny-bert/float32-float32.json"]}
    assert manifests["tiny-llama"]["base_dtype"] == "bfloat16" and manifests["tiny-bert"]["base_dtype"] == "float32"
    matrices = {model: len(m["matrices"]) for model, m in manifests.items()}
    assert matrices == {"tiny-llama": 10, "tiny-bert": 12}
    assert all(m["computed"] + m["kept"] == len(m["matrices"]) for m in manifests.values())
    reads = {"lora_dash": 2, "lora_init": 2, "lora_tsd": 3}  # the switch and / or the init, then the analysis
    seen = set()
    for record in (workdir / GRID / "runs").glob("*/*/*/r4/s0/train.json"):
        metrics = json.loads(record.read_text())
        if metrics["method"] in reads:
            hits = reads[metrics["method"]] * matrices[metrics["model"]]
            assert metrics["svd_cache"].startswith(f"[svd-cache] {hits} hits, 0 computed "), (record, metrics["svd_cache"])
            seen.add((metrics["model"], metrics["method"]))
    assert len(seen) == 2 * len(reads)


def test_train_sets_are_built_once_and_shared(workdir, smoke_run):
    from lora_tsd.data import prepare

    rows = prepare.read_jsonl(_one(workdir, f"resources/train_sets/{_smoke_key()}/commonsense170k/train.jsonl"))
    assert {r["task"] for r in rows} == {"arc_easy", "arc_challenge", "boolq", "piqa", "social_iqa", "hellaswag",
                                         "winogrande", "openbookqa"}
    assert all(r["output"].startswith("the correct answer is ") for r in rows)
    from lora_tsd.data import prompts

    assert all(r["prompt"] == prompts.llm_adapters_train(r["instruction"]) for r in rows)
    alpaca = prepare.read_jsonl(_one(workdir, f"resources/train_sets/{_smoke_key()}/alpaca/train.jsonl"))
    assert len(alpaca) >= 200 and all(r["instruction"] and r["output"] for r in alpaca)
    test = prepare.read_jsonl(_one(workdir, f"resources/data/{_smoke_key()}/ifeval/test.jsonl"))
    assert all(set(r) == {"key", "prompt", "instruction_id_list", "kwargs"} for r in test)


def test_second_invocation_has_nothing_to_do(workdir, smoke_run):
    proc = _snakemake(workdir, SMOKE)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_killed_training_job_leaves_no_result_and_rerun_resumes_only_it(workdir, smoke_run):
    config = {**SMOKE, "methods": ["lora", "lora_dash"], "seeds": [1], "models": ["tiny-llama"],
              "tasks": ["arc_easy"], "train": {**SMOKE["train"], "steps": 400, "checkpoint_every": 10}}
    victim = workdir / GRID / "runs/tiny-llama/commonsense170k/lora/r4/s1"
    proc = subprocess.Popen(_cmd(workdir, config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=_env())
    deadline = time.time() + 600
    while not (victim / "checkpoint" / "state.pt").exists():
        assert time.time() < deadline and proc.poll() is None, "training never checkpointed"
        time.sleep(0.2)
    # Kill (as an OOM killer would) the job training the victim cell: it holds that cell's log open.
    killed = 0
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            files = [f.path for f in child.open_files()]
        except psutil.Error:
            continue
        if any(str(victim) in f for f in files):
            child.send_signal(signal.SIGKILL)
            killed += 1
    assert killed >= 1
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode != 0  # the killed job failed the run
    assert not (victim / "train.json").exists() and not (victim / "eval").exists()
    assert not (victim / "adapter").exists()
    assert (victim / "checkpoint" / "state.pt").exists()

    rerun = _snakemake(workdir, config)
    jobs = _jobs(rerun.stdout + rerun.stderr)
    assert jobs.get("train") == 1 and jobs.get("evaluate") == 1, jobs
    metrics = json.loads((victim / "train.json").read_text())
    assert metrics["resumed_from_step"] >= 10 and len(metrics["losses"]) == 400
    df = pd.read_csv(workdir / GRID / "leaderboard.csv")
    acc = df[(df.protocol == "loglik") & (df.metric == "acc")]
    assert len(acc) == 1 + len(config["methods"])


def test_methods_with_their_own_stages_run_each_stage_once_per_what_it_depends_on(workdir, smoke_run):
    methods = ["eva", "corda", "lora_ga", "lora_one"]
    config = {**SMOKE, "methods": ["lora", *methods], "seeds": [0, 1], "tasks": ["arc_easy", "sst2"]}
    proc = _snakemake(workdir, config)
    jobs = _jobs(proc.stdout + proc.stderr)
    # EVA's and CorDA's per train set (not per seed); the gradient per train set and seed (a
    # classifier's head is seeded), for each of its two methods
    assert jobs.get("eva_init") == 2 and jobs.get("corda_init") == 2 and jobs.get("gradient_init") == 8, jobs
    assert jobs.get("train") == 18, jobs  # 4 methods x 2 train sets x 2 seeds, and lora's seed 1
    stages = workdir / GRID / "stages"
    assert {p.relative_to(stages).as_posix() for p in stages.rglob("*.pt")} >= {
        "tiny-llama/commonsense170k/eva_r4.pt", "tiny-bert/sst2/corda_r4.pt",
        "tiny-llama/commonsense170k/lora_ga_grad_s1.pt", "tiny-bert/sst2/lora_one_grad_s0.pt"}
    df = pd.read_csv(workdir / GRID / "leaderboard.csv")
    scored = df[df.metric.isin(["acc", "accuracy"]) & (df.protocol != "generative")]
    for method in methods:
        cells = scored[scored["method"] == method]
        assert sorted(zip(cells["task"], cells["seed"])) == [("arc_easy", 0), ("arc_easy", 1), ("sst2", 0), ("sst2", 1)]
    # the stage's time and rows are the cell's cost
    record = json.loads(next((workdir / GRID).rglob("lora_one/r4/s1/train.json")).read_text())
    assert record["init_s"] > record["init_stage_s"] > 0 and record["init_rows"] > 0
    assert record["train_time_s"] == pytest.approx(record["loop_time_s"] + record["init_s"])
    # a rerun with one more rank trains only that rank's cells: every stage and cell is kept
    proc = _snakemake(workdir, {**config, "methods": methods[1:], "ranks": [4, 2]})
    jobs = _jobs(proc.stdout + proc.stderr)
    assert jobs.get("train") == 12 and jobs.get("corda_init") == 2 and "gradient_init" not in jobs, jobs


def test_every_cell_has_a_ci_and_every_method_a_paired_comparison_with_lora(workdir, smoke_run):
    _snakemake(workdir, SMOKE)  # the smoke grid's tables again (an earlier test ran another grid here)
    out = json.loads((workdir / GRID / "leaderboard.json").read_text())
    summary, compared = pd.DataFrame(out["summary"]), pd.DataFrame(out["comparisons"])
    # Every protocol's records carry per-item scores, so no cell lacks its interval.
    assert summary["ci_low"].notna().all() and (summary["ci_low"] <= summary["mean"] + 1e-9).all()
    assert (summary["mean"] <= summary["ci_high"] + 1e-9).all()
    trained = summary[~summary.method.isin(["base", "lora"])]
    assert len(compared) == len(trained) and set(compared.method) == {"lora_dash", "lora_init", "lora_tsd"}
    assert compared["p"].between(0, 1).all() and (compared["n_items"] > 0).all()
    assert pd.read_csv(workdir / GRID / "paired.csv").shape[0] == len(compared)
    md = (workdir / GRID / "leaderboard.md").read_text()
    assert md.count("### Paired with LoRA") == 4 and md.count("### Cost") == 3  # per protocol, per family


def test_forgetting_is_scored_once_per_causal_cell_and_shown_in_the_cost_tables(workdir, smoke_run):
    """The base model once, each tiny-llama cell once (commonsense and instruction), none for
    tiny-bert; the cost tables show the value for the causal families and n/a for GLUE."""
    _snakemake(workdir, SMOKE)  # the smoke grid's tables again (an earlier test ran another grid here)
    base = json.loads((workdir / GRID / "runs/tiny-llama/base/forgetting.json").read_text())
    assert base["sample"]["rows"] == 60 and base["tokens"] > 0 and base["max_length"] == 512
    # the smoke grid's cells (other tests add methods to this workdir)
    cells = sorted(c for c in (workdir / GRID / "runs").glob("*/*/*/r4/s0/forgetting.json")
                   if c.parts[-4] in SMOKE["methods"])
    assert len(cells) == 2 * len(SMOKE["methods"]) and all("tiny-llama" in str(c) for c in cells)
    for path in cells:
        rec = json.loads(path.read_text())
        assert rec["base_ce"] == base["ce"] and rec["token_sha256"] == base["token_sha256"]
        assert rec["forgetting"] == pytest.approx(rec["ce"] - base["ce"])
    md = (workdir / GRID / "leaderboard.md").read_text()
    for family in ("commonsense", "instruction", "glue"):
        cost = md.split(f"### Cost — {family}")[1].split("##")[0]
        rows = [line for line in cost.splitlines() if line.startswith("| tiny-")]
        assert "forgetting (nats/token)" in cost and len(rows) == len(SMOKE["methods"])
        last = [row.rstrip(" |").rsplit("|", 1)[1].strip() for row in rows]
        assert all(v == "n/a" for v in last) if family == "glue" else all(v[0] in "+-" for v in last), last
    df = pd.read_csv(workdir / GRID / "leaderboard.csv")
    assert df.loc[df.model == "tiny-bert", "forgetting"].isna().all()
    assert df.loc[(df.model == "tiny-llama") & (df.method != "base"), "forgetting"].notna().all()


@pytest.mark.browser
def test_report_shows_every_family_s_tables_and_figures_in_a_browser(workdir, smoke_run, chromium):
    from browser import check_report

    report = workdir / "report.html"
    _snakemake(workdir, SMOKE)
    proc = subprocess.run(_cmd(workdir, SMOKE) + ["--report", str(report)], capture_output=True, text=True,
                          env=_env(), timeout=600)
    assert proc.returncode == 0 and "ERROR" not in proc.stderr, proc.stderr[-3000:]
    view = check_report(report, workdir / "shots")
    assert view.problems() == []
    assert set(view.categories) == {"commonsense", "glue", "instruction", "Leaderboard", "Reproduction",
                                    "Task-specific directions"}
    directions = next(e for e in view.entries if e.category == "Task-specific directions")
    assert "What this grid lacks" in directions.text and "no full fine-tuning cell" in directions.text
    for family in ("commonsense", "glue", "instruction"):
        images = {Path(e.path).stem for e in view.entries if e.category == family and e.kind == "image"}
        assert images == {"pareto", "rank", "bars", "loss_curves", "tsd_profile", "tsd_overlap"}
        assert all(e.image_loaded for e in view.entries if e.category == family and e.kind == "image")
        page = next(e for e in view.entries if e.category == family and e.kind == "html")
        # The first table: one row per method plus the base model, with the seeds column.
        assert page.tables[0].n_rows == len(SMOKE["methods"]) + 1 and "seeds" in page.tables[0].header
        assert "95% CI" in page.text and page.caption
    board = next(e for e in view.entries if e.category == "Leaderboard")
    assert board.kind == "html" and len(board.tables) >= 9
