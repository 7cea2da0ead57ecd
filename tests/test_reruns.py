"""What reruns, on a copy of the repository (its own lora_tsd on PYTHONPATH) after one real run
of a small grid: only a change that could change a result reruns, and only the cells it could
change; grids with different names live side by side."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from grids import env
from lora_tsd.pipeline import codehash

ROOT = Path(__file__).resolve().parent.parent
SMOKE = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
GRID = {**SMOKE, "name": "a", "models": ["tiny-llama"], "tasks": ["arc_easy"],
        "methods": ["lora", "lora_dash", "lora_init", "lora_tsd"], "seeds": [0]}


# --- the hash itself ----------------------------------------------------------------------------

@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    copy = tmp_path / "lora_tsd"
    shutil.copytree(ROOT / "lora_tsd", copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(codehash, "ROOT", copy)
    codehash._parsed.cache_clear()
    yield copy
    codehash._parsed.cache_clear()


def _hashes():
    codehash._parsed.cache_clear()
    return {m: codehash.code_hash("lora_tsd.training.cell", m) for m in ("lora", "lora_dash", "lora_init", "lora_tsd")}


def _edit(path: Path, old: str, new: str):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


# An edit inside one method's hooks (file under lora_tsd/, text, replacement) and the grid methods
# whose cells it may change: the hash tests and the copied-tree tests below share them.
HOOK_EDITS = {
    "dash_hooks": ("methods/dash.py", 'if step == switch_step(ctx)',
                   'if step == switch_step(ctx) + 0', {"lora_dash", "lora_tsd"}),
    "init_hooks": ("methods/lora_init.py", 'n = ctx.steps(ctx.tsd["init_steps"])',
                   'n = ctx.steps(ctx.tsd["init_steps"]) + 0', {"lora_init", "lora_tsd"}),
}


@pytest.mark.parametrize("edit", list(HOOK_EDITS))
def test_an_edit_to_a_method_s_hooks_changes_only_its_cells_hashes(package_copy, edit):
    path, old, new, changed = HOOK_EDITS[edit]
    before = _hashes()
    _edit(package_copy / path, old, new)
    after = _hashes()
    assert {m for m in before if after[m] != before[m]} == changed


def test_shared_method_code_changes_every_cell_that_runs_it(package_copy):
    """residual.py serves LoRA-Init (and MiLoRA, PiSSA, OLoRA), hooks.py every method."""
    before = _hashes()
    _edit(package_copy / "methods" / "hooks.py", "return int(value) if value >= 1", "return int(value) + 0 if value >= 1")
    after = _hashes()
    assert all(after[m] != before[m] for m in before)


def test_comments_and_docstrings_change_nothing_but_shared_code_changes_every_cell(package_copy):
    before = _hashes()
    _edit(package_copy / "training" / "loop.py", "from __future__ import annotations\n",
          "from __future__ import annotations\n# a new comment\n")
    _edit(package_copy / "methods" / "dash.py", '"""', '"""A reworded docstring. ', )
    assert _hashes() == before
    _edit(package_copy / "data" / "encoding.py", "from . import prompts\n", "from . import prompts\n\nEXTRA = 2\n")
    after = _hashes()
    assert all(after[m] != before[m] for m in before)


def test_the_evaluation_hash_follows_the_metric_scripts_it_loads_by_path(package_copy):
    before = codehash.code_hash("lora_tsd.evaluation.scoring")
    script = next((package_copy / "evaluation" / "metrics" / "glue").glob("*.py"))
    script.write_text(script.read_text() + "\n# a comment\n")
    codehash._parsed.cache_clear()
    assert codehash.code_hash("lora_tsd.evaluation.scoring") == before
    script.write_text(script.read_text() + "\nEXTRA = 3\n")
    codehash._parsed.cache_clear()
    assert codehash.code_hash("lora_tsd.evaluation.scoring") != before
    assert "lora_tsd.methods.dash" not in codehash.closure("lora_tsd.evaluation.scoring")


def test_no_shared_module_imports_a_methods_own_module():
    """The hash leaves other methods' modules out: sound only if nothing every method runs
    imports them (methods/registry.py is where they meet)."""
    from lora_tsd.methods.registry import METHODS

    own = {f"lora_tsd.{m}" for spec in METHODS.values() for m in spec.modules}
    entries = ("lora_tsd.training.cell", "lora_tsd.training.launch", "lora_tsd.evaluation.scoring",
               "lora_tsd.evaluation.forgetting", "lora_tsd.aggregate.tables", "lora_tsd.aggregate.figures.draw",
               "lora_tsd.data.prepare")
    shared = set().union(*(codehash.closure(e) for e in entries)) - own - {"lora_tsd.methods.registry"}
    assert "lora_tsd.training.loop" in shared and "lora_tsd.methods.hooks" in shared
    for module in shared:
        assert not codehash._parsed(module)[1] & own, f"{module} imports {codehash._parsed(module)[1] & own}"


# --- the workflow on a copied tree ----------------------------------------------------------------

@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A copy of the repository and a workdir in which GRID has run once."""
    base = tmp_path_factory.mktemp("reruns")
    repo = base / "repo"
    for name in ("Snakefile", "config.yaml", "workflow", "lora_tsd"):
        src = ROOT / name
        (shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__")) if src.is_dir()
         else (repo.mkdir(exist_ok=True), shutil.copy(src, repo / name)))
    (repo / "profiles").symlink_to("workflow/profiles")
    work = base / "work"
    work.mkdir()
    (work / "a.yaml").write_text(yaml.safe_dump(GRID))
    out = _run(repo, work, "a.yaml")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return repo, work


def _run(repo: Path, work: Path, config: str, *extra: str) -> subprocess.CompletedProcess:
    """snakemake from the copied tree (its package first on PYTHONPATH, its default profile)."""
    cmd = ["snakemake", "-s", str(repo / "Snakefile"), "--directory", str(work), "--cores", "2",
           "--configfile", str(work / config), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env={**env(), "PYTHONPATH": str(repo)}, timeout=1200,
                          cwd=repo)


def _dry_run(repo, work, config="a.yaml", *extra, **changes) -> str:
    """A dry run's output, with `changes` merged into the config's sections."""
    cfg = yaml.safe_load((work / config).read_text())
    for section, values in changes.items():  # a section's keys merged; a top-level value replaced
        cfg[section] = {**cfg.get(section, {}), **values} if isinstance(values, dict) else values
    (work / "planned.yaml").write_text(yaml.safe_dump(cfg))
    out = _run(repo, work, "planned.yaml", "-n", *extra)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def _planned(repo, work, config="a.yaml", *extra, **changes) -> dict[str, int]:
    """Jobs a dry run would run (rule -> count)."""
    out = _dry_run(repo, work, config, *extra, **changes)
    if "Nothing to be done" in out:
        return {}
    block = out.split("Job stats:")[1].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M)}


@pytest.fixture
def restore(tree):
    """Undo a test's edits to the copied package and workflow."""
    repo, _ = tree
    saved = {p: p.read_text() for p in [*repo.glob("lora_tsd/**/*.py"), *repo.glob("workflow/scripts/*.py")]}
    yield
    for path, text in saved.items():
        path.write_text(text)


@pytest.mark.e2e
def test_result_neutral_knobs_and_script_edits_rerun_nothing(tree, restore):
    repo, work = tree
    assert _planned(repo, work) == {}
    assert _planned(repo, work, train={"checkpoint_every": 1}) == {}
    # eval.batch_size rescores (a batch's padding rounds differently in bf16), and retrains nothing
    rescored = _planned(repo, work, eval={"batch_size": 3})
    assert rescored.get("evaluate") and rescored.get("evaluate_base") and "train" not in rescored
    assert _planned(repo, work, cluster={"tflops": 7, "max_runtime": 60}) == {}
    # the cache switched off reruns only the SVD stage (which then keeps nothing), no cell: the
    # cells take its manifest as an ancient input
    assert _planned(repo, work, tsd={"svd_cache": False}) == {"svd_cache": 1}
    assert _planned(repo, work, "a.yaml", "--set-threads", "train=2", "evaluate=2") == {}
    script = repo / "workflow" / "scripts" / "train.py"
    script.write_text(script.read_text() + "\n# a touched script\n")
    os.utime(script)
    assert _planned(repo, work) == {}
    _edit(repo / "lora_tsd" / "methods" / "dash.py", "from . import export, tsd\n",
          "from . import export, tsd\n# a comment only\n")
    assert _planned(repo, work) == {}


def _planned_cells(repo, work) -> set[str]:
    """The methods whose train job a dry run would run."""
    out = _dry_run(repo, work)
    return set(re.findall(r"output: results/a/runs/[^/]+/[^/]+/(\w+)/r\d+/s\d+/adapter", out))


@pytest.mark.e2e
@pytest.mark.parametrize("edit", list(HOOK_EDITS))
def test_an_edit_to_a_method_s_hooks_retrains_only_its_cells(tree, restore, edit):
    repo, work = tree
    path, old, new, changed = HOOK_EDITS[edit]
    _edit(repo / "lora_tsd" / path, old, new)
    assert _planned_cells(repo, work) == changed
    jobs = _planned(repo, work)
    assert jobs.get("train") == 2 and jobs.get("evaluate") == 2 and "evaluate_base" not in jobs, jobs


@pytest.mark.e2e
def test_a_result_changing_option_retrains_every_cell(tree):
    repo, work = tree
    jobs = _planned(repo, work, train={"lr": 2.0e-3})
    assert jobs.get("train") == 4 and jobs.get("evaluate") == 4, jobs
    jobs = _planned(repo, work, tsd={"dash_s": 3})
    assert jobs.get("train") == 3, jobs  # only the TSD methods read tsd options
    jobs = _planned(repo, work, exact=True)  # the exact switch: every job that runs torch again
    assert (jobs.get("train"), jobs.get("evaluate"), jobs.get("svd_cache")) == (4, 4, 1) and jobs.get("evaluate_base"), jobs


@pytest.mark.e2e
def test_two_grids_coexist_and_neither_reruns_the_other(tree):
    repo, work = tree
    lead_a = work / "results" / "a" / "leaderboard.csv"
    before = (lead_a.stat().st_mtime_ns, lead_a.read_text())
    other = {**GRID, "name": "b", "train": {**GRID["train"], "lr": 2.0e-3}, "methods": ["lora"]}
    (work / "b.yaml").write_text(yaml.safe_dump(other))
    out = _run(repo, work, "b.yaml")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "prepare_task" not in out.stdout + out.stderr  # the same data settings: shared data
    assert (lead_a.stat().st_mtime_ns, lead_a.read_text()) == before
    assert (work / "results" / "b" / "leaderboard.csv").exists()
    assert _planned(repo, work) == {}  # back to grid a: nothing to redo
    assert _planned(repo, work, "b.yaml") == {}
    # a grid with other data settings gets its own data folders
    carved = {**GRID, "name": "c", "split": {**GRID["split"], "salt": "another-carve"}}
    (work / "c.yaml").write_text(yaml.safe_dump(carved))
    out = _dry_run(repo, work, "c.yaml")
    shared = {p.name for p in (work / "resources" / "data").iterdir()}
    assert len(shared) == 1
    planned = set(re.findall(r"output: resources/data/([^/]+)/", out))
    assert planned and not planned & shared, (planned, shared)  # c writes beside a's data, not over it
