"""End to end: the snakemake CLI on the smoke config, in a temp directory."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SMOKE = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
pytestmark = pytest.mark.e2e


def _cmd(workdir: Path, config: dict) -> list[str]:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return ["snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2",
            "--configfile", str(workdir / "config.yaml")]


def _env():
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def _snakemake(workdir: Path, config: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(_cmd(workdir, config), capture_output=True, text=True, env=_env(), timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _jobs(output: str) -> dict[str, int]:
    """The 'Job stats' table snakemake prints before running."""
    block = output.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M)}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("grid")


@pytest.fixture(scope="module")
def smoke_run(workdir):
    return _snakemake(workdir, SMOKE)


def test_smoke_grid_has_a_numeric_row_per_cell_and_a_base_row(workdir, smoke_run):
    df = pd.read_csv(workdir / "results" / "leaderboard.csv")
    cells = df[df["method"] != "base"]
    expected = sorted((m, r, s) for m in SMOKE["methods"] for r in SMOKE["ranks"] for s in SMOKE["seeds"])
    assert sorted(zip(cells["method"], cells["rank"], cells["seed"])) == expected
    assert (df["method"] == "base").sum() == 1
    assert df["acc"].between(0, 100).all() and df["acc_norm"].between(0, 100).all()
    assert (df["n_test"] == SMOKE["eval"]["limit"]).all()
    assert (cells["trainable_params"] > 0).all() and (cells["steps"] == SMOKE["train"]["steps"]).all()
    md = (workdir / "results" / "leaderboard.md").read_text()
    assert "log-likelihood" in md and "tiny-llama" in md and "train /" in md


@pytest.mark.parametrize("method,export_rank", [("lora", 4), ("lora_dash", 6), ("lora_init", 8), ("lora_tsd", 10)])
def test_run_folders_hold_a_standard_peft_adapter_metrics_and_analysis(workdir, smoke_run, method, export_rank):
    run = workdir / f"results/runs/tiny-llama/arc_easy/{method}/r4/s0"
    adapter_cfg = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == export_rank and adapter_cfg["peft_type"] == "LORA"
    assert (run / "adapter" / "adapter_model.safetensors").exists()
    metrics = json.loads((run / "train.json").read_text())
    assert metrics["rank"] == 4 and len(metrics["losses"]) == SMOKE["train"]["steps"]
    assert metrics["packages"]["torch"].startswith("2.13.0") and "tokens_per_s" in metrics
    assert not (run / "checkpoint").exists()  # removed once the run finished
    import numpy as np

    arrays = np.load(run / "tsd_analysis.npz")
    q = "model.layers.0.self_attn.q_proj"
    assert arrays[f"{q}|rates_end"].shape == arrays[f"{q}|singular_values"].shape == (64,)
    if method in ("lora_dash", "lora_tsd"):
        assert arrays[f"{q}|indices_switch"].shape == (SMOKE["tsd"]["dash_s"],)
        assert metrics["switch_step"] == int(SMOKE["tsd"]["dash_t"] * SMOKE["train"]["steps"])


def test_second_invocation_has_nothing_to_do(workdir, smoke_run):
    proc = _snakemake(workdir, SMOKE)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_killed_training_job_leaves_no_result_and_rerun_resumes_only_it(workdir, smoke_run):
    config = {**SMOKE, "methods": ["lora", "lora_dash"], "seeds": [1],
              "train": {**SMOKE["train"], "steps": 400, "checkpoint_every": 10}}
    victim = workdir / "results/runs/tiny-llama/arc_easy/lora/r4/s1"
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
    assert not (victim / "train.json").exists() and not (victim / "eval.json").exists()
    assert not (victim / "adapter").exists()
    assert (victim / "checkpoint" / "state.pt").exists()

    rerun = _snakemake(workdir, config)
    jobs = _jobs(rerun.stdout + rerun.stderr)
    assert jobs.get("train") == 1 and jobs.get("evaluate") == 1, jobs
    metrics = json.loads((victim / "train.json").read_text())
    assert metrics["resumed_from_step"] >= 10 and len(metrics["losses"]) == 400
    df = pd.read_csv(workdir / "results" / "leaderboard.csv")
    assert len(df) == 1 + len(config["methods"])


def test_a_method_with_its_own_stage_runs_that_rule_once_for_all_seeds(workdir, smoke_run):
    config = {**SMOKE, "methods": ["eva"], "seeds": [0, 1]}
    proc = _snakemake(workdir, config)
    jobs = _jobs(proc.stdout + proc.stderr)
    assert jobs.get("eva_init") == 1 and jobs.get("train") == 2, jobs
    assert (workdir / "resources/init/tiny-llama/arc_easy/eva_r4.pt").exists()
    df = pd.read_csv(workdir / "results" / "leaderboard.csv")
    assert sorted(df.loc[df["method"] == "eva", "seed"]) == [0, 1]
