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


def claim(lock_dir: str | Path = LOCK_DIR, environ=os.environ, wait_s: float = 3600, poll_s: float = 0.5):
    """Lock a free device and narrow CUDA_VISIBLE_DEVICES to it; returns (device, open lock
    file), which the caller keeps for the process's life, or (None, None) without GPUs."""
    devices = visible_devices(environ)
    if not devices:
        return None, None
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    deadline = time.monotonic() + wait_s
    while True:
        for device in devices:
            handle = open(lock_dir / f"{host}-gpu{device}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            environ["CUDA_VISIBLE_DEVICES"] = device
            return device, handle
        if time.monotonic() > deadline:
            raise TimeoutError(f"no free GPU among {devices} after {wait_s:.0f} s (locks under {lock_dir}); "
                               f"run with --resources gpu=<number of GPUs> so snakemake starts no more GPU jobs "
                               f"than there are GPUs")
        time.sleep(poll_s)
