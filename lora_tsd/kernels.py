"""The exact switch (config key `exact`, preset configs/exact.yaml): a float32 number that does
not depend on which instruction sets the CPU has. The preset sets the dtypes (float32
everywhere); this module pins the kernel paths, in each job before torch loads (the libraries
read these variables once): torch's own kernels at AVX2, MKL's GEMM in its conditional
numerical reproducibility mode at AVX2, oneDNN at AVX2, and torch's deterministic algorithms
(which matter on a GPU, where cuBLAS also needs its fixed workspace). benchmarks/exactness.py
measures what reproduces with and without it, and what it costs.
Imports nothing heavy: it runs before torch."""
from __future__ import annotations

import os
import platform

# x86-64 only: the instruction-set names are x86's (on Arm no pin is offered; see docs).
X86_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
           "ONEDNN_MAX_CPU_ISA": "AVX2"}
GPU_ENV = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
FLAG = "LORA_TSD_EXACT"  # tells a job's child processes (torchrun workers) to pin too
# Recorded with every result (provenance.hardware): a run under a pin says so.
RECORDED = tuple(X86_ENV) + tuple(GPU_ENV)


def env(machine: str | None = None) -> dict[str, str]:
    """The variables the exact switch sets on a machine of this architecture."""
    machine = (machine or platform.machine()).lower()
    return {**(X86_ENV if machine in ("x86_64", "amd64") else {}), **GPU_ENV}


def pin(exact: bool, environ=os.environ) -> None:
    """In a job, before torch is imported: with `exact`, set the pins and turn on torch's
    deterministic algorithms (else leave everything as the machine chooses)."""
    if not exact:
        return
    environ.update({**env(), FLAG: "1"})
    import torch

    torch.use_deterministic_algorithms(True)


def inherited(environ=os.environ) -> bool:
    """Whether the parent job pinned (a torchrun worker calls pin(inherited()))."""
    return environ.get(FLAG) == "1"


def pinned(environ=os.environ) -> dict[str, str]:
    """The pins of this process when the exact switch set them (for the record and the SVD
    cache's keys); empty otherwise, whatever the environment holds (a cluster's own
    CUBLAS_WORKSPACE_CONFIG is no pin)."""
    return {k: environ[k] for k in RECORDED if environ.get(k)} if inherited(environ) else {}
