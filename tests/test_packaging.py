"""Installable as a package: a wheel built from the checkout, installed without -e into a fresh
virtual environment, serves the modules, schemas and data files that the workflow reads, from
site-packages alone (no checkout on the path)."""
import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from grids import SMOKE, env

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e

CHECK = """
import json, pathlib, pkgutil, importlib, lora_tsd
from lora_tsd.aggregate import reproduction
from lora_tsd.data import prepare
from lora_tsd.data.tasks import TASKS, TRAIN_SETS
from lora_tsd.evaluation import metrics
from lora_tsd.pipeline import codehash, config, contract
modules = [m.name for m in pkgutil.walk_packages(lora_tsd.__path__, "lora_tsd.")]
for name in modules:
    if name != "lora_tsd.data.instruction_data.make_data":
        importlib.import_module(name)
config.check(config.load(__import__("sys").argv[1]))
print(json.dumps({
    "package": str(pathlib.Path(lora_tsd.__file__).parent),
    "modules": len(modules),
    "schemas": [p.is_file() for p in (config.SCHEMA, contract.SCHEMA)],
    "instruction rows": len(prepare.read_jsonl(prepare.packaged_path(TRAIN_SETS["alpaca"].packaged))),
    "ifeval prompts": len(prepare.read_jsonl(prepare.packaged_path(TASKS["ifeval"].packaged))),
    "reference rows": len(reproduction.load_reference()),
    "glue keys": len(metrics._module_keys()),
    "code hash": codehash.code_hash("lora_tsd.training.cell", "lora_dash"),
}))
"""


def test_a_wheel_installed_without_editable_serves_schemas_and_data(tmp_path):
    # Built from a copy: setuptools writes build/ beside the sources, which must not be the checkout.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "lora_tsd", source / "lora_tsd", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(source)], check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob("lora_tsd_bench-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    target = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", target, str(wheel)],
                   check=True, capture_output=True, timeout=300)
    # Third-party libraries from this environment, but not its editable lora_tsd (a .pth finder,
    # which PYTHONPATH entries never run); the working directory is outside the checkout.
    config = tmp_path / "smoke.yaml"
    config.write_text(json.dumps(SMOKE))
    out = subprocess.run([str(python), "-c", CHECK, str(config)], capture_output=True, text=True, cwd=tmp_path,
                         env={**env(), "PYTHONPATH": sysconfig.get_paths()["purelib"]}, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(found["package"]).is_relative_to(venv) and not Path(found["package"]).is_relative_to(ROOT)
    assert found["modules"] >= 40 and found["schemas"] == [True, True]
    assert found["instruction rows"] >= 200 and found["ifeval prompts"] > 0 and found["reference rows"] > 0
    assert found["glue keys"] > 0
    from lora_tsd.pipeline import codehash

    assert found["code hash"] == codehash.code_hash("lora_tsd.training.cell", "lora_dash")  # the same code
    # The workflow, copied without the package beside it, plans the smoke grid on the wheel alone.
    flow = tmp_path / "flow"
    flow.mkdir()
    shutil.copy(ROOT / "Snakefile", flow / "Snakefile")
    shutil.copytree(ROOT / "workflow", flow / "workflow", symlinks=True)
    shutil.rmtree(flow / "workflow" / "schemas")  # the links point into the checkout's package
    work = tmp_path / "work"
    work.mkdir()
    dry = subprocess.run([str(python), "-m", "snakemake", "-s", str(flow / "Snakefile"), "--directory", str(work),
                          "--configfile", str(config), "--cores", "1", "-n"], capture_output=True, text=True,
                         cwd=tmp_path, env={**env(), "PYTHONPATH": sysconfig.get_paths()["purelib"]}, timeout=600)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    assert "aggregate" in dry.stdout and "train" in dry.stdout
