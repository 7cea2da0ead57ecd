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
    assert sorted(zip(cells["rank"], cells["seed"])) == [(r, s) for r in SMOKE["ranks"] for s in SMOKE["seeds"]]
    assert (df["method"] == "base").sum() == 1
    assert df["acc"].between(0, 100).all() and df["acc_norm"].between(0, 100).all()
    assert (df["n_test"] == SMOKE["eval"]["limit"]).all()
    assert (cells["trainable_params"] > 0).all() and (cells["steps"] == SMOKE["train"]["steps"]).all()
    md = (workdir / "results" / "leaderboard.md").read_text()
    assert "log-likelihood" in md and "tiny-llama" in md and "train /" in md


def test_run_folders_hold_a_peft_adapter_and_metrics(workdir, smoke_run):
    run = workdir / "results/runs/tiny-llama/arc_easy/lora/r2/s0"
    assert (run / "adapter" / "adapter_config.json").exists()
    assert (run / "adapter" / "adapter_model.safetensors").exists()
    metrics = json.loads((run / "train.json").read_text())
    assert metrics["rank"] == 2 and len(metrics["losses"]) == SMOKE["train"]["steps"]
    assert metrics["packages"]["torch"].startswith("2.13.0") and "tokens_per_s" in metrics
    assert not (run / "checkpoint" / "state.pt").exists()  # removed once the run finished


def test_second_invocation_has_nothing_to_do(workdir, smoke_run):
    proc = _snakemake(workdir, SMOKE)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_killed_training_job_leaves_no_result_and_rerun_resumes_only_it(workdir, smoke_run):
    config = {**SMOKE, "seeds": [1], "train": {**SMOKE["train"], "steps": 400, "checkpoint_every": 10}}
    victim = workdir / "results/runs/tiny-llama/arc_easy/lora/r2/s1"
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
    assert len(df) == 1 + len(config["ranks"])
