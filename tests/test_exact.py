"""The exact switch (lora_tsd/kernels.py, configs/exact.yaml): the pins reach torch when set
before it loads, every job that runs torch sets them first, a result records them, and SVDs
computed under them are kept apart from unpinned ones."""
import ast
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lora_tsd import kernels
from lora_tsd.methods import tsd

ROOT = Path(__file__).resolve().parents[1]
X86 = platform.machine().lower() in ("x86_64", "amd64")
# Every script of a job that runs torch (the rest build assets or tables).
TORCH_SCRIPTS = ["train.py", "evaluate.py", "forgetting.py", "stage.py", "baselines/lora_plus.py"]


def _child(code: str, **env) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


PROBE = ("import json; from lora_tsd import kernels; kernels.pin({exact});"
         "import torch; from lora_tsd import provenance; hw = provenance.hardware();"
         "print(json.dumps({{'capability': hw['cpu_capability'], 'deterministic': hw['deterministic_algorithms'],"
         "'pins': hw['kernel_pins']}}))")


@pytest.mark.skipif(not X86, reason="the pins name x86 instruction sets")
def test_pins_reach_torch_and_the_record():
    on = _child(PROBE.format(exact=True))
    assert on == {"capability": "AVX2", "deterministic": True, "pins": kernels.env()}
    # A host already capped lower keeps the pin's own value: the pin decides, not the host.
    assert _child(PROBE.format(exact=True), ATEN_CPU_CAPABILITY="default")["capability"] == "AVX2"
    off = _child(PROBE.format(exact=False), ATEN_CPU_CAPABILITY="", MKL_CBWR="", ONEDNN_MAX_CPU_ISA="",
                 MKL_ENABLE_INSTRUCTIONS="")
    assert off["deterministic"] is False and off["capability"] == torch.backends.cpu.get_cpu_capability()


def test_off_sets_nothing_and_the_flag_reaches_workers():
    environ = {}
    kernels.pin(False, environ)
    assert environ == {} and not kernels.inherited(environ)
    assert kernels.inherited({kernels.FLAG: "1"})


def test_only_the_switch_pins():
    """A cluster's own CUBLAS_WORKSPACE_CONFIG, or a variable set empty, records no pin."""
    assert kernels.pinned({"CUBLAS_WORKSPACE_CONFIG": ":16:8", "ATEN_CPU_CAPABILITY": "avx2"}) == {}
    assert kernels.pinned({kernels.FLAG: "1", "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": ""}) == {
        "ATEN_CPU_CAPABILITY": "avx2"}


def test_pins_by_architecture():
    assert kernels.env("x86_64") == {**kernels.X86_ENV, **kernels.GPU_ENV}
    assert kernels.env("aarch64") == kernels.GPU_ENV  # no x86 names on Arm: only the GPU's workspace


@pytest.mark.parametrize("script", TORCH_SCRIPTS)
def test_each_torch_job_pins_before_anything_imports_torch(script):
    """The pin is the first statement after the GPU claim: nothing before it imports torch or a
    lora_tsd module that does (gpu_slots and kernels import nothing heavy)."""
    body = ast.parse((ROOT / "workflow" / "scripts" / script).read_text()).body
    pin = next(i for i, node in enumerate(body) if "kernels.pin(" in ast.unparse(node))
    assert ast.unparse(body[pin]) == "kernels.pin(snakemake.config.get('exact', False))"
    light = {"os", "sys", "math", "resource", "tempfile", "time", "importlib", "pathlib", "lora_tsd.pipeline", "lora_tsd"}
    for node in body[:pin]:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            assert module in light, f"{script} imports {module} before the pin"
            if module in ("lora_tsd.pipeline", "lora_tsd"):
                assert {a.name for a in node.names} <= {"gpu_slots", "kernels"}, ast.unparse(node)


def test_svds_under_pins_are_kept_apart(monkeypatch):
    w = torch.randn(6, 4)
    cache = tsd.SVDCache(None)
    for name in kernels.RECORDED:
        monkeypatch.delenv(name, raising=False)
    plain = cache.key(w, torch.float32)
    h = tsd.hashlib.sha256(w.contiguous().view(torch.uint8).numpy().tobytes())
    h.update(f"{tuple(w.shape)}|{w.dtype}|{torch.float32}".encode())
    assert plain == h.hexdigest()[:32]  # unpinned keys are those of before the switch: caches stay valid
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert cache.key(w, torch.float32) == plain  # a variable set by hand is no pin
    monkeypatch.setenv(kernels.FLAG, "1")
    assert cache.key(w, torch.float32) != plain
