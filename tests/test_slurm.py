"""The grid on a real one-node SLURM (tools/start-slurm.sh starts it): the same leaderboard as a
local run, and a requeued training job that resumes to the same loss curve. The cluster here
has no GPUs, so the jobs ask for none; everything else is the shipped profile. Each job through
SLURM pays a Snakemake start-up (tens of seconds on 2 cores), so the cluster grid is a handful
of cells of the smoke grid, run in the session's smoke-grid workdir (its models and task data
are built) and compared with that grid's local leaderboard."""
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from grids import ROOT, SMOKE, env
from grids import run as run_grid
pytestmark = [pytest.mark.e2e, pytest.mark.slurm]
# Every rule the profile sizes (its set-threads): the GPU rules, which this cluster runs on CPUs.
GPU_RULES = tuple(yaml.safe_load((ROOT / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())["set-threads"])


@pytest.fixture(scope="module")
def slurm():
    out = subprocess.run(["bash", str(ROOT / "tools" / "start-slurm.sh")], capture_output=True, text=True,
                         timeout=900)
    if out.returncode == 3 and os.environ.get("CI") != "true":
        pytest.skip(f"no SLURM here: {out.stderr.strip()}")
    assert out.returncode == 0, out.stderr[-3000:]
    if shutil.which("sbatch") is None:
        pytest.fail("start-slurm.sh succeeded but sbatch is not on PATH")


def _config(workdir: Path, name: str, **changes) -> Path:
    """configs/smoke.yaml under another grid name, with `changes`."""
    cfg = {**SMOKE, "name": name, **changes}
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _slurm_cmd(workdir: Path, config: Path) -> list[str]:
    """The shipped profile, with what this one-node test cluster lacks overridden on the
    command line: no GPUs, 2 CPUs, a partition named debug, no accounting (squeue for status)."""
    return ["snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--configfile", str(config),
            "--profile", str(ROOT / "profiles" / "slurm"), "--jobs", "2", "--local-cores", "2",
            "--default-resources", "slurm_partition=debug",
            "--set-resources", *[f"{r}:gpu=0" for r in GPU_RULES],
            "--set-threads", *[f"{r}=1" for r in GPU_RULES],
            "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
            "--seconds-between-status-checks", "3", "--latency-wait", "10"]


def _values(leaderboard: Path) -> pd.DataFrame:
    df = pd.read_csv(leaderboard)
    keys = ["model", "task", "protocol", "metric", "method", "rank", "seed"]
    return df[keys + ["value"]].sort_values(keys).reset_index(drop=True)


# Both model kinds, a log-likelihood, generative and GLUE protocol, plain LoRA and a method that
# switches mid-run: a handful of the smoke grid's cells.
CLUSTER_CELLS = {"tasks": ["arc_easy", "sst2"], "methods": ["lora", "lora_dash"]}


def test_smoke_cells_through_slurm_give_the_local_leaderboard_cell_for_cell(slurm, smoke_grid):
    workdir, _, local_board = smoke_grid
    out = subprocess.run(_slurm_cmd(workdir, _config(workdir, "cluster", **CLUSTER_CELLS)), capture_output=True,
                         text=True, env=env(), timeout=1800)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    cluster = _values(workdir / "results" / "cluster" / "leaderboard.csv")
    local = _values(local_board)
    local = local[local.task.isin(CLUSTER_CELLS["tasks"]) & local.method.isin(CLUSTER_CELLS["methods"] + ["base"])]
    assert len(cluster) > 0 and len(local) == len(cluster)
    assert set(cluster.method) == {"base", "lora", "lora_dash"} and set(cluster.task) == {"arc_easy", "sst2"}
    pd.testing.assert_frame_equal(local.reset_index(drop=True), cluster, check_exact=False, rtol=0, atol=1e-9)
    # every GPU rule's job went through SLURM, and no CPU-only rule did
    comments = subprocess.run(["squeue", "-h", "--states=all", "-o", "%k"], capture_output=True, text=True).stdout
    rules = {c.split("_wildcards")[0].removeprefix("rule_") for c in comments.split()}
    assert {"train", "evaluate", "evaluate_base"} <= rules, rules
    assert not {"prepare_task", "build_train_set", "aggregate", "plots", "fetch_wheel", "build_model"} & rules, rules


def _train_job(comment: str) -> str | None:
    out = subprocess.run(["squeue", "-h", "-o", "%i|%T|%k"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        job, state, note = line.split("|", 2)
        if note.startswith(comment) and state == "RUNNING":
            return job
    return None


def _release(job: str) -> None:
    """SLURM holds a requeued job back for about two minutes (its BeginTime, set once the job is
    pending again): release it then, instead of waiting that out."""
    deadline = time.time() + 120
    while time.time() < deadline:
        state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T|%r"], capture_output=True, text=True).stdout
        if state.strip() == "PENDING|BeginTime":
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True, capture_output=True)
            return
        time.sleep(0.2)


def test_a_requeued_training_job_resumes_to_the_uninterrupted_loss_curve(slurm, tmp_path):
    cell = {"models": ["tiny-llama"], "tasks": ["arc_easy"], "methods": ["lora_dash"], "seeds": [0],
            "train": {**SMOKE["train"], "steps": 300, "checkpoint_every": 10}}
    run_grid(tmp_path, {**SMOKE, "name": "uninterrupted", **cell}, "uninterrupted.yaml")
    run = tmp_path / "results" / "requeued" / "runs" / "tiny-llama" / "commonsense170k" / "lora_dash" / "r4" / "s0"
    proc = subprocess.Popen(_slurm_cmd(tmp_path, _config(tmp_path, "requeued", **cell)), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env())
    deadline, requeued = time.time() + 900, None
    while requeued is None:
        assert proc.poll() is None and time.time() < deadline, "training never checkpointed under SLURM"
        job = _train_job("rule_train_wildcards_tiny-llama_commonsense170k_lora_dash")
        if job and (run / "checkpoint" / "state.pt").exists():
            subprocess.run(["scontrol", "requeue", job], check=True, capture_output=True)
            _release(job)
            requeued = job
        time.sleep(0.2)
    out, _ = proc.communicate(timeout=1800)
    assert proc.returncode == 0, out[-4000:]
    resumed = json.loads((run / "train.json").read_text())
    uninterrupted = json.loads((tmp_path / "results" / "uninterrupted" / str(run.relative_to(
        tmp_path / "results" / "requeued")) / "train.json").read_text())
    assert resumed["resumed_from_step"] >= 10, "the requeued job started over instead of resuming"
    assert len(resumed["losses"]) == len(uninterrupted["losses"]) == 300
    assert resumed["losses"] == pytest.approx(uninterrupted["losses"], abs=1e-6)
    restarts = subprocess.run(["scontrol", "show", "job", requeued], capture_output=True, text=True).stdout
    assert "Restarts=1" in restarts, restarts
