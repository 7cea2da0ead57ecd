"""Running the snakemake CLI from the tests: the smoke config, the command line, and a run that
must succeed. conftest.py builds the smoke grid once per session (fixture `smoke_grid`)."""
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SMOKE = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())


def env() -> dict:
    """This interpreter's bin first on PATH, so jobs run the same environment."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def command(workdir: Path, config: dict, name: str = "config.yaml") -> list[str]:
    """snakemake on the repository's Snakefile in `workdir`, with `config` written there as `name`."""
    (workdir / name).write_text(yaml.safe_dump(config))
    return ["snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", "2",
            "--configfile", str(workdir / name)]


def run(workdir: Path, config: dict, name: str = "config.yaml", timeout: int = 1200) -> subprocess.CompletedProcess:
    proc = subprocess.run(command(workdir, config, name), capture_output=True, text=True, env=env(), timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc
