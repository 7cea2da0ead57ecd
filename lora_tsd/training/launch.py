"""torchrun for one data-parallel cell: `launch` starts `python -m lora_tsd.training.launch`
in one process per GPU (collectives.py joins them); each worker runs cell.run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path


def launch(processes: int, kwargs: dict, spec: str | Path, out=None) -> None:
    """Run `cell.run(**kwargs)` in `processes` processes under torchrun (one host). The
    arguments travel as a JSON file (`spec`); the workers' output goes to `out`."""
    Path(spec).write_text(json.dumps(kwargs, default=str))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
           "-m", "lora_tsd.training.launch", str(spec)]
    done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT if out is not None else None,
                          preexec_fn=die_with_parent)
    if done.returncode != 0:
        raise RuntimeError(f"data-parallel training over {processes} processes failed "
                           f"(exit {done.returncode}); the workers' output is above")


def die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies. torchrun starts its workers in their
    own sessions, so a killed job (a hard kill, a scheduler's) would otherwise leave them
    training on, and writing, without it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        return


def _worker(spec: str) -> None:
    die_with_parent()
    if os.getppid() == 1:  # the launcher died before the line above took effect
        raise SystemExit("the launcher is gone")
    from .. import kernels

    kernels.pin(kernels.inherited())  # the job's exact switch: torch's deterministic mode is per process
    from . import cell

    cell.run(**json.loads(Path(spec).read_text()))


if __name__ == "__main__":
    _worker(sys.argv[1])
