"""What produced a result: package versions, git commit, config hash, hardware (the CPU and GPU
and the kernel-choosing features and settings that can move a bf16 number)."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from . import kernels

PACKAGES = ["torch", "transformers", "peft", "accelerate", "datasets", "evaluate", "lm_eval",
            "pandas", "snakemake", "lora-tsd-bench"]


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit(repo: str | Path | None = None) -> str:
    repo = repo or Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def config_hash(config: dict) -> str:
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


# ISA features that choose the CPU kernels a matmul runs (oneDNN / MKL / torch's own dispatch):
# bf16 results differ between, e.g., an AVX512-BF16 and an AMX-BF16 machine. x86 flags, then
# Arm's (/proc/cpuinfo "Features").
KERNEL_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512dq", "avx512bw", "avx512vl",
                "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16",
                "asimd", "asimdhp", "sve", "sve2", "bf16", "i8mm", "sme")


def parse_cpuinfo(text: str) -> dict:
    """The first processor's model name and kernel-choosing ISA features from /proc/cpuinfo's
    text: {"model": str | None, "flags": [the KERNEL_FLAGS it has, in that order]}."""
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # one processor's block is enough: the others repeat it
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    have = set((fields.get("flags") or fields.get("features") or "").split())
    model = fields.get("model name") or fields.get("hardware") or fields.get("cpu model") or None
    return {"model": model, "flags": [f for f in KERNEL_FLAGS if f in have]}


@lru_cache(maxsize=1)
def cpu_info(path: str = "/proc/cpuinfo") -> dict:
    try:
        with open(path) as f:
            text = f.read(1 << 16)  # the first processor's block is near the top
    except OSError:
        text = ""
    info = parse_cpuinfo(text)
    info["model"] = info["model"] or platform.processor() or platform.machine()
    return info


def _dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def hardware(compute_dtype=None) -> dict:
    """What ran a result and which kernels it could take: the CPU's model and the ISA features
    that pick its kernels, torch's view of them (cpu_capability), thread counts, the float32
    matmul precision, the GPU's name and compute capability under CUDA, and the run's compute
    dtype when the caller passes it (a torch.dtype or its name), and the exact switch's kernel
    pins where set (kernels.py)."""
    import torch

    cpu = cpu_info()
    info = {"platform": platform.platform(), "python": platform.python_version(), "machine": platform.machine(),
            "cpu": cpu["model"], "cpu_flags": cpu["flags"], "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_count": os.cpu_count(),
            "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "onednn": torch.backends.mkldnn.is_available(),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "kernel_pins": kernels.pinned()}
    if compute_dtype is not None:
        info["compute_dtype"] = _dtype_name(compute_dtype)
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpu_capability=f"{major}.{minor}",
                    gpu_count=torch.cuda.device_count(), cuda=torch.version.cuda,
                    gpu_bf16=torch.cuda.is_bf16_supported(), cuda_matmul_tf32=torch.backends.cuda.matmul.allow_tf32,
                    cudnn_tf32=torch.backends.cudnn.allow_tf32)
    return info
