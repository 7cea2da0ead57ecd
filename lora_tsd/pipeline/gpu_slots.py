"""One GPU per job on a multi-GPU machine: `snakemake --cores all --resources gpu=N` caps how
many GPU jobs run at once, and each job claims a free device here before torch starts, by
holding an exclusive lock on a file named for the host and the device, then narrowing
CUDA_VISIBLE_DEVICES to it. The operating system drops the lock when the job's process ends,
however it ends, so a killed job never leaves its GPU claimed. Under SLURM the allocation's
CUDA_VISIBLE_DEVICES already names the job's own GPU, and the claim is of that one.
Imports nothing heavy: it runs before torch."""
from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import time
from pathlib import Path

LOCK_DIR = Path(".snakemake") / "gpu-slots"


def visible_devices(environ=os.environ) -> list[str]:
    """The devices this process may use: CUDA_VISIBLE_DEVICES when set, else every GPU
    nvidia-smi lists, else none (a CPU machine)."""
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def _try_lock(path: Path):
    handle = open(path, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def claim(lock_dir: str | Path = LOCK_DIR, environ=os.environ, wait_s: float = 3600, poll_s: float = 0.5,
          count: int = 1):
    """Lock `count` free devices (a data-parallel cell takes several) and narrow
    CUDA_VISIBLE_DEVICES to them; returns (devices, open lock files), which the caller keeps
    for the process's life, or (None, None) without GPUs. A partial claim is let go before
    waiting, so two jobs never hold half of what each needs."""
    devices = visible_devices(environ)
    if not devices:
        return None, None
    if count > len(devices):
        raise ValueError(f"a job needs {count} GPUs but only {len(devices)} are visible ({devices}); "
                         f"set train.gpus to at most {len(devices)}")
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    deadline = time.monotonic() + wait_s
    while True:
        held = []
        for device in devices:
            handle = _try_lock(lock_dir / f"{host}-gpu{device}.lock")
            if handle is not None:
                held.append((device, handle))
                if len(held) == count:
                    environ["CUDA_VISIBLE_DEVICES"] = ",".join(d for d, _ in held)
                    handles = [h for _, h in held]
                    return environ["CUDA_VISIBLE_DEVICES"], handles[0] if count == 1 else handles
        for _, handle in held:
            handle.close()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {count} free GPU(s) among {devices} after {wait_s:.0f} s (locks under {lock_dir}); "
                               f"run with --resources gpu=<number of GPUs> so snakemake starts no more GPU jobs "
                               f"than there are GPUs")
        time.sleep(poll_s)
