"""The published reference (lora_tsd/aggregate/published): publishing a grid, comparing a fresh
run with it cell by cell, and the README's tables rendered from it. Grids are synthetic: real
evaluation records (scoring.run's fields) under the workflow's paths, tables.write's leaderboard."""
import copy
import json
from pathlib import Path

import pytest
import yaml

from lora_tsd.aggregate import tables
from lora_tsd.aggregate.published import __main__ as cli
from lora_tsd.aggregate.published import compare, readme, stamp
from lora_tsd.pipeline.config import ConfigError, check

ROOT = Path(__file__).resolve().parent.parent
N = 40  # test items per task
HARDWARE = {"platform": "Linux", "python": "3.11", "machine": "x86_64", "cpu": "AMD EPYC 9R14",
            "cpu_flags": ["avx2", "avx512f", "avx512_bf16"], "cpu_capability": "AVX512", "cpu_count": 2,
            "cpu_affinity": 2, "torch_threads": 2, "torch_interop_threads": 2, "onednn": True,
            "float32_matmul_precision": "highest", "deterministic_algorithms": False, "compute_dtype": "bfloat16"}
PACKAGES = {"torch": "2.13.0", "transformers": "4.57.0"}
CONFIG = {"name": "g", "models": ["m", "e"], "tasks": ["arc_easy", "piqa", "sst2"], "methods": ["lora", "lora_dash"],
          "ranks": [8], "seeds": [0, 1], "eval": {"dtype": "bfloat16"}}


def _pattern(correct: int, shift: int) -> list[float]:
    return [1.0 if (i + shift) % N < correct else 0.0 for i in range(N)]


def scores() -> dict:
    """(method, task, seed) -> per-item 0/1 scores; base has seed None."""
    out = {}
    for t, task in enumerate(("arc_easy", "piqa", "sst2")):
        out[("base", task, None)] = _pattern(20, t)
        for method, correct in (("lora", 24), ("lora_dash", 28)):
            for seed in (0, 1):
                out[(method, task, seed)] = _pattern(correct + seed, 3 * seed + t)
    for seed in (0, 1):  # a cell with a zero-width CI: every item right in both seeds
        out[("lora_dash", "piqa", seed)] = [1.0] * N
    return out


def _results(task: str, items: list[float]) -> dict:
    ids, hashes = list(range(N)), [f"{task}-{i}" for i in range(N)]
    mean = sum(items) / N
    if task == "sst2":  # GLUE: predictions and labels; the label is 1, so a 1 is a correct prediction
        return {"glue": {"metrics": {"accuracy": mean}, "n_test": N, "items": {
            "doc_id": ids, "doc_hash": hashes, "prediction": [int(v) for v in items], "label": [1] * N,
            "subset": [None] * N}}}
    return {"loglik": {"metrics": {"acc": mean, "acc_stderr": 0.05}, "n_test": N,
                       "items": {"doc_id": ids, "doc_hash": hashes, "acc": items}}}


def make_grid(root: Path, table: dict | None = None, hardware: dict = HARDWARE, packages: dict = PACKAGES,
              config: dict = CONFIG, leave_out=()) -> Path:
    """A finished grid folder: records under the workflow's paths and tables.write's leaderboard."""
    grid = root / "results" / "g"
    files = []
    for (method, task, seed), items in (table or scores()).items():
        if (method, task, seed) in leave_out:
            continue
        model, family, train_set = ("e", "glue", "sst2") if task == "sst2" else ("m", "commonsense", "commonsense170k")
        dtype = "float32" if model == "e" else "bfloat16"
        rec = {"model": model, "task": task, "family": family, "train_set": train_set, "diverged": None,
               "eval_dtype": dtype, "protocols": {}, "eval_config": {"limit": N}, "method": method,
               "results": _results(task, items), "packages": packages, "git_commit": "c0ffee1",
               "hardware": {**hardware, "compute_dtype": dtype}}
        if method == "base":
            path = grid / "runs" / model / "base" / f"{task}.json"
        else:
            rec.update(rank=8, seed=seed, adapter="a", adapter_bytes=1000,
                       train={"trainable_params": 80, "base_params": 1000, "steps": 5, "final_loss": 1.0,
                              "train_time_s": 2.0, "peak_rss_mb": 100.0, "git_commit": "c0ffee1"})
            path = grid / "runs" / model / train_set / method / "r8" / f"s{seed}" / "eval" / f"{task}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec))
        files.append(path)
    stamp_ = {"commit": "c0ffee1", "config_hash": "x", "data": "synthetic"}
    tables.write(files, config, stamp_, grid / "leaderboard.md", grid / "leaderboard.csv", grid / "leaderboard.json",
                 grid / "paired.csv")
    return grid


def _flip(table: dict, key: tuple, item: int) -> dict:
    out = copy.deepcopy(table)
    out[key][item] = 1.0 - out[key][item]
    return out


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """(the grid, its published file)."""
    root = tmp_path_factory.mktemp("published")
    grid = make_grid(root)
    out = root / "reference" / "leaderboard.json"
    stamp.publish(grid, out, date="2026-01-01T00:00:00+00:00")
    return grid, out


def _cell(result: dict, method: str, task: str, metric: str = "acc") -> dict:
    return next(c for c in result["cells"] if (c["method"], c["task"], c["metric"]) == (method, task, metric))


# -- publish ------------------------------------------------------------------------------------

def test_publish_keeps_the_leaderboard_and_adds_provenance_and_one_entry_per_record(published):
    grid, out = published
    doc = json.loads(out.read_text())
    board = json.loads((grid / "leaderboard.json").read_text())
    assert {k: doc[k] for k in board} == board
    made = doc["published"]
    assert made["commit"] == "c0ffee1" and made["record_commits"] == ["c0ffee1"]
    assert made["config"] == CONFIG and len(made["config_hash"]) == 12
    assert made["packages"] == {"torch": ["2.13.0"], "transformers": ["4.57.0"]}
    assert [(m["hardware"]["compute_dtype"], m["records"]) for m in made["machines"]] == [("bfloat16", 10),
                                                                                        ("float32", 5)]
    assert made["eval_dtypes"] == {"bfloat16": 10, "float32": 5} and made["date"] == "2026-01-01T00:00:00+00:00"
    assert len(doc["records"]) == 15  # 3 base + 2 methods x 2 seeds x 3 tasks, one protocol each
    entry = next(e for e in doc["records"] if (e["method"], e["task"], e["seed"]) == ("lora", "piqa", 1))
    assert entry["rank"] == 8 and entry["protocol"] == "loglik" and entry["n_test"] == N
    assert entry["metrics"] == {"acc": 25 / N, "acc_stderr": 0.05} and list(entry["items_sha256"]) == ["acc"]
    glue = next(e for e in doc["records"] if (e["method"], e["task"]) == ("base", "sst2"))
    assert glue["seed"] is None and list(glue["items_sha256"]) == ["accuracy"]


def test_republishing_gives_the_same_bytes_and_one_item_changes_its_hash(published, tmp_path):
    grid, out = published
    again = tmp_path / "again.json"
    stamp.publish(grid, again, date="2026-01-01T00:00:00+00:00")
    assert again.read_bytes() == out.read_bytes()
    first = {(e["method"], e["task"], e["seed"]): e["items_sha256"] for e in json.loads(out.read_text())["records"]}
    # The same score on other items: the value stays, the hash moves.
    swapped = scores()
    swapped[("lora", "arc_easy", 0)][0], swapped[("lora", "arc_easy", 0)][39] = 0.0, 1.0
    assert sum(swapped[("lora", "arc_easy", 0)]) == sum(scores()[("lora", "arc_easy", 0)])
    other = stamp.snapshot(make_grid(tmp_path, swapped))
    hashes = {(e["method"], e["task"], e["seed"]): e["items_sha256"] for e in other["records"]}
    assert [k for k in first if first[k] != hashes[k]] == [("lora", "arc_easy", 0)]


def test_only_the_leaderboards_records_are_published(tmp_path):
    """A method or seed the config no longer has, a forgetting record: not part of the tables."""
    grid = make_grid(tmp_path)
    stale = grid / "runs" / "m" / "commonsense170k" / "lora" / "r8" / "s7" / "eval" / "piqa.json"
    stale.parent.mkdir(parents=True)
    rec = json.loads((stale.parent.parent.parent / "s0" / "eval" / "piqa.json").read_text())
    stale.write_text(json.dumps({**rec, "seed": 7}))
    (grid / "runs" / "m" / "base" / "forgetting.json").write_text(json.dumps({"ce": 1.0}))
    assert len(stamp.record_files(grid, CONFIG)) == 15


# -- compare ------------------------------------------------------------------------------------

def test_a_grid_compared_with_its_own_publication_is_identical_everywhere(published, tmp_path):
    grid, out = published
    result = compare.compare(grid, out)
    assert {c["verdict"] for c in result["cells"]} == {"identical"} and len(result["cells"]) == 12
    assert result["verdict"] == "12 of 12 cells identical, 0 within this run's 95% CI, 0 outside"
    assert result["ok"] and result["provenance"] == [] and result["flips"] == []
    assert cli.main(["compare", str(grid), "--reference", str(out), "--out", str(tmp_path)]) == 0
    md = (tmp_path / "comparison.md").read_text()
    assert "**12 of 12 cells identical" in md and "Nothing differs" in md
    assert json.loads((tmp_path / "comparison.json").read_text())["counts"]["identical"] == 12


def test_one_flipped_item_is_within_or_outside_as_the_ci_says(published, tmp_path):
    _, out = published
    # lora arc_easy: ~60% on 40 items, CI about ±15 points: one item (1.25 points) stays within.
    # lora_dash piqa: every item right in both seeds, so this run's CI is [100, 100]; the
    # published 100 is inside; published with one item wrong, it would be outside (below).
    table = _flip(scores(), ("lora", "arc_easy", 0), 0)
    result = compare.compare(make_grid(tmp_path, table), out)
    cell = _cell(result, "lora", "arc_easy")
    assert cell["verdict"] == "within" and cell["fresh_ci_low"] < cell["published_mean"] < cell["fresh_ci_high"]
    assert cell["fresh_mean"] == pytest.approx(cell["published_mean"] - 1.25)
    assert _cell(result, "lora", "avg")["verdict"] == "within"  # the average moves with it
    assert _cell(result, "lora", "piqa")["verdict"] == "identical"
    assert result["ok"] and result["verdict"].startswith("10 of 12 cells identical, 2 within")


def test_a_published_mean_outside_this_runs_ci_is_outside(tmp_path):
    table = _flip(scores(), ("lora_dash", "piqa", 0), 5)  # published: 39 of 40 right in seed 0
    reference = tmp_path / "ref.json"
    stamp.publish(make_grid(tmp_path / "old", table), reference)
    grid = make_grid(tmp_path / "new")  # this run: all 40 right in both seeds
    result = compare.compare(grid, reference)
    cell = _cell(result, "lora_dash", "piqa")
    assert (cell["fresh_ci_low"], cell["fresh_ci_high"]) == (100.0, 100.0)
    assert cell["published_mean"] == pytest.approx(98.75) and cell["verdict"] == "outside"
    assert not result["ok"]
    assert "1 outside (m lora_dash r8 commonsense/loglik piqa acc)" in result["verdict"]
    assert cli.main(["compare", str(grid), "--reference", str(reference), "--out", str(tmp_path)]) == 1


def test_equal_values_on_other_items_are_not_identical(published, tmp_path):
    _, out = published
    table = scores()
    items = table[("lora", "sst2", 1)]
    right, wrong = items.index(1.0), items.index(0.0)
    items[right], items[wrong] = 0.0, 1.0  # the same accuracy, other items
    cell = _cell(compare.compare(make_grid(tmp_path, table), out), "lora", "sst2", "accuracy")
    assert cell["fresh_mean"] == cell["published_mean"] and cell["verdict"] == "within"


def test_a_cell_on_one_side_only_is_missing_and_names_its_side(published, tmp_path):
    grid, out = published
    leave = {("lora_dash", "sst2", 0), ("lora_dash", "sst2", 1)}
    smaller = make_grid(tmp_path / "small", leave_out=leave)
    result = compare.compare(smaller, out)
    cell = _cell(result, "lora_dash", "sst2", "accuracy")
    assert cell["verdict"] == "missing" and cell["only_in"] == "published" and cell["fresh_mean"] is None
    assert result["verdict"].endswith(", 1 missing (1 only in the published file, 0 only in this run)")
    assert not result["ok"]
    reference = tmp_path / "small.json"
    stamp.publish(smaller, reference)
    other = compare.compare(grid, reference)
    assert _cell(other, "lora_dash", "sst2", "accuracy")["only_in"] == "fresh"
    assert "(0 only in the published file, 1 only in this run)" in other["verdict"]


def test_provenance_differences_are_listed(published, tmp_path, capsys):
    _, out = published
    xeon = {**HARDWARE, "cpu": "Intel Xeon Platinum 8488C", "cpu_flags": ["avx2", "avx512f", "amx_bf16", "amx_tile"],
            "torch_threads": 1}
    grid = make_grid(tmp_path, hardware=xeon, packages={**PACKAGES, "torch": "2.14.0"},
                     config={**CONFIG, "eval": {"dtype": "float32"}})
    result = compare.compare(grid, out)
    texts = [compare.difference_text(d) for d in result["provenance"]]
    assert "machine cpu: AMD EPYC 9R14 in the published file, Intel Xeon Platinum 8488C in this run" in texts
    assert "machine cpu_flags: only in the published file: avx512_bf16; only in this run: amx_bf16, amx_tile" in texts
    assert "machine torch_threads: 2 in the published file, 1 in this run" in texts
    assert "package torch: 2.13.0 in the published file, 2.14.0 in this run" in texts
    assert "config key eval.dtype: bfloat16 in the published file, float32 in this run" in texts
    assert any(t.startswith("config hash: ") for t in texts)
    assert not any(t.startswith(("package transformers", "machine cpu_capability", "commit")) for t in texts)
    cli.main(["compare", str(grid), "--reference", str(out), "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert printed.startswith("12 of 12 cells identical") and "  package torch: 2.13.0" in printed
    assert "- machine cpu: AMD EPYC 9R14" in (tmp_path / "comparison.md").read_text()


def test_paired_marks_that_flip_are_listed():
    row = {"family": "commonsense", "protocol": "loglik", "model": "m", "method": "lora_dash", "rank": "8",
           "task": "avg", "metric": "acc"}
    published = {"comparisons": [{**row, "diff": 5.0, "significant": True},
                                 {**row, "task": "piqa", "diff": -1.0, "significant": False}]}
    fresh = {"comparisons": [{**row, "diff": 4.0, "significant": False},
                             {**row, "task": "piqa", "diff": -1.5, "significant": False}]}
    flipped = compare.flips(published, fresh)
    assert [(f["task"], f["published"], f["fresh"]) for f in flipped] == [("avg", "▲", "")]
    assert compare.flip_text(flipped[0]) == ("m lora_dash r8 commonsense/loglik avg acc: ▲ in the published file, "
                                             "no mark in this run")


def test_a_missing_reference_or_grid_is_one_line_naming_the_path(published, tmp_path, capsys):
    grid, _ = published
    assert cli.main(["compare", str(grid), "--reference", str(tmp_path / "none.json")]) == 2
    assert capsys.readouterr().err == f"error: no published reference at {tmp_path / 'none.json'}\n"
    assert cli.main(["compare", str(tmp_path / "nogrid")]) == 2
    assert capsys.readouterr().err == f"error: no grid folder at {tmp_path / 'nogrid'}\n"
    assert cli.main(["publish", str(tmp_path / "nogrid"), str(tmp_path / "out.json")]) == 2
    assert not (tmp_path / "out.json").exists()


# -- the README's tables ------------------------------------------------------------------------

def _row(family, protocol, task, metric, method, mean, std, low, high, seeds=2):
    return {"family": family, "protocol": protocol, "model": "x", "method": method,
            "rank": "-" if method == "base" else "8", "task": task, "metric": metric, "seeds": seeds,
            "expected_seeds": 1 if method == "base" else 2, "mean": mean, "std": std, "ci_low": low, "ci_high": high}


def _pair(family, protocol, task, metric, method, diff, low, high, p):
    return {"family": family, "protocol": protocol, "model": "x", "method": method, "rank": "8", "task": task,
            "metric": metric, "diff": diff, "ci_low": low, "ci_high": high, "p": p,
            "significant": low > 0 or high < 0}


SYNTHETIC = {
    "config": {"methods": ["lora", "lora_init"]},
    "summary": [
        _row("commonsense", "loglik", "arc_easy", "acc", "base", 48.3333, None, 35.0, 61.6667, seeds=1),
        _row("commonsense", "loglik", "arc_easy", "acc", "lora", 44.1667, 1.1785, 35.0, 53.3333),
        _row("commonsense", "loglik", "arc_easy", "acc", "lora_init", 40.0, 2.357, 30.8333, 49.1667),
        _row("commonsense", "loglik", "piqa", "acc", "base", 63.3333, None, 50.0, 75.0, seeds=1),
        _row("commonsense", "loglik", "piqa", "acc", "lora", 61.6667, 2.357, 52.5, 70.8333),
        _row("commonsense", "loglik", "piqa", "acc", "lora_init", 60.8333, None, 51.6667, 69.1667, seeds=1),
        _row("instruction", "ifeval", "ifeval", "inst_level_strict_acc", "lora", 28.2051, 1.8131, 21.3, 35.3),
    ],
    "comparisons": [
        _pair("commonsense", "loglik", "avg", "acc", "lora_init", -2.5, -6.6667, 2.0833, 0.3461),
        _pair("commonsense", "generative", "avg", "acc", "lora_init", 20.4167, 12.5, 28.75, 0.0002),
        _pair("glue", "glue", "avg", "accuracy", "lora_init", -3.75, -7.0833, -0.8333, 0.0219),
    ],
    "published": {"commit": "0123456789abcdef", "config_hash": "3355ba91353c", "eval_dtypes": {"bfloat16": 3,
                                                                                               "float32": 2},
                  "machines": [{"hardware": {"cpu": "AMD EPYC 9R14", "cpu_flags": ["avx2", "avx512_bf16"],
                                             "compute_dtype": dtype}, "records": n}
                               for dtype, n in (("bfloat16", 3), ("float32", 2))]},
}


def test_readme_tables_are_rendered_from_the_published_file():
    assert readme.scores_table(SYNTHETIC) == [
        "| family, protocol | task, metric | base | lora | lora_init |",
        "|---|---|---|---|---|",
        "| commonsense, loglik | ARC-Easy acc | 48.33 [35.0, 61.7] | 44.17 ± 1.18 [35.0, 53.3] "
        "| 40.00 ± 2.36 [30.8, 49.2] |",
        "|  | PIQA acc | 63.33 [50.0, 75.0] | 61.67 ± 2.36 [52.5, 70.8] | 60.83 [51.7, 69.2] (1 of 2 seeds) |",
        "| instruction, ifeval | instruction-level strict | - | 28.21 ± 1.81 [21.3, 35.3] | - |",
    ]
    assert readme.paired_table(SYNTHETIC) == [
        "| method − LoRA | lora_init |",
        "|---|---|",
        "| commonsense avg acc, loglik | -2.50 [-6.67, +2.08] p=0.346 |",
        "| commonsense avg acc, generative | +20.42 [+12.50, +28.75] p<0.001 ▲ |",
        "| GLUE avg accuracy | -3.75 [-7.08, -0.83] p=0.022 ▼ |",
    ]
    assert readme.caption(SYNTHETIC, "docs/ref.json") == (
        "*Generated from `docs/ref.json` (tables at commit `0123456`, config `3355ba91353c`; AMD EPYC 9R14 "
        "(avx512_bf16); eval dtypes bfloat16, float32) by `python -m lora_tsd.aggregate.published readme`.*")


def test_readme_check_finds_a_stale_block_and_the_rewrite_fixes_it(tmp_path, capsys):
    reference = tmp_path / "docs" / "reference.json"
    reference.parent.mkdir()
    reference.write_text(json.dumps(SYNTHETIC))
    page = tmp_path / "README.md"
    page.write_text(f"# Title\n\nprose before\n\n{readme.BEGIN}\n| old | table |\n{readme.END}\n\nprose after\n")
    args = ["readme", "--readme", str(page), "--reference", str(reference)]
    assert cli.main([*args, "--check"]) == 1
    assert "stale" in capsys.readouterr().out
    assert cli.main(args) == 0
    text = page.read_text()
    assert text.startswith(f"# Title\n\nprose before\n\n{readme.BEGIN}\n\n| family, protocol |")
    assert text.endswith(f"`python -m lora_tsd.aggregate.published readme`.*\n\n{readme.END}\n\nprose after\n")
    assert "| old | table |" not in text and "`docs/reference.json`" in text and readme.PAIRED_INTRO in text
    assert cli.main([*args, "--check"]) == 0
    page.write_text("# no block\n")
    assert cli.main([*args, "--check"]) == 2
    assert "has no published-tables block" in capsys.readouterr().err


def test_readme_tables_come_from_published_file():
    """The README's tables are the published reference's (regenerate: python -m
    lora_tsd.aggregate.published readme). Fails while the file is missing."""
    assert readme.check(ROOT / "README.md", ROOT / readme.REFERENCE)


# -- the config key -----------------------------------------------------------------------------

def test_the_reference_key_validates():
    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    schema = ROOT / "workflow" / "schemas" / "config.schema.yaml"
    check({**base, "reference": "docs/reference/{name}/other.json"}, schema)
    check({**base, "reference": None}, schema)
    with pytest.raises(ConfigError, match="reference"):
        check({**base, "reference": 3}, schema)


def test_a_sweep_grid_publishes_the_settings_its_leaderboard_shows(tmp_path):
    """A sweep cell's record counts only at a setting the leaderboard's long table holds (its
    shared setting), so the published file and the tables read the same cells."""
    (tmp_path / "leaderboard.csv").write_text("model,train_set,method,setting\nm,ts,lora,lr=1e-4\nm,ts,lora,\n")
    shown = stamp.shown_settings(tmp_path)
    assert shown == {("m", "ts", "lora", "lr=1e-4")}
    rec = {"results": {}, "model": "m", "task": "t", "train_set": "ts", "method": "lora", "rank": 8, "seed": 0}
    assert stamp._wanted({**rec, "setting": "lr=1e-4"}, {}, shown)
    assert not stamp._wanted({**rec, "setting": "lr=2e-4"}, {}, shown)
    assert stamp._wanted(rec, {}, shown) and not stamp._wanted(rec, {"seeds": [1]}, shown)
