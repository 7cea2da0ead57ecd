"""A grid's published reference: its leaderboard.json, a `published` block (commit, config and
its hash, package versions, the machines and dtypes that produced the records, the date), and
`records`: one entry per evaluation record and protocol with its metrics and a sha256 of each
metric's per-item scores, so a later run can be checked value by value and item by item.
Everything but the date is a function of the grid's files (sorted keys and records)."""
from __future__ import annotations

import csv
import datetime
import hashlib
import json
from collections import Counter
from pathlib import Path

from ... import atomic, provenance
from ..items import glue_kind

BOARD = "leaderboard.json"


class Problem(Exception):
    """What the CLI says in one line, without a traceback."""


class NotFound(Problem):
    """A grid, leaderboard or reference that is not there."""


def read_json(path: str | Path, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"no {what} at {path}")
    return json.loads(path.read_text())


def board(grid: str | Path) -> dict:
    grid = Path(grid)
    if not grid.is_dir():
        raise NotFound(f"no grid folder at {grid}")
    return read_json(grid / BOARD, "leaderboard (run the grid first)")


def _wanted(rec: dict, config: dict, settings: set) -> bool:
    """A test-split record of the config's models, tasks, methods, ranks and seeds (a sweep
    cell's: only at a setting the leaderboard shows, `settings`); a key the config lacks filters nothing."""
    if "results" not in rec or rec.get("split", "test") != "test":
        return False
    checks = [("models", rec["model"]), ("tasks", rec["task"])]
    if rec.get("method", "base") != "base":
        checks += [("methods", rec["method"]), ("ranks", rec.get("rank")), ("seeds", rec.get("seed"))]
    if any(key in config and value not in config[key] for key, value in checks):
        return False
    return rec.get("setting") is None or (rec["model"], rec["train_set"], rec["method"], rec["setting"]) in settings


def shown_settings(grid: str | Path) -> set[tuple]:
    """(model, train set, method, setting) of the sweep cells the leaderboard's long table holds
    (a sweep grid's shared setting; empty without a sweep)."""
    path = Path(grid) / "leaderboard.csv"
    if not path.is_file():
        return set()
    with path.open(newline="") as f:
        return {(r["model"], r["train_set"], r["method"], r["setting"]) for r in csv.DictReader(f) if r.get("setting")}


def record_files(grid: str | Path, config: dict) -> list[Path]:
    """The evaluation records behind the grid's leaderboard: the base models' and every cell's
    (runs/<model>/<train_set>/<method>/r<rank>[/<setting>]/s<seed>/eval/<task>.json)."""
    runs, settings = Path(grid) / "runs", shown_settings(grid)
    found = [*runs.glob("*/base/*.json"), *runs.glob("*/*/*/r*/s*/eval/*.json"),
             *runs.glob("*/*/*/r*/*/s*/eval/*.json")]
    return sorted(p for p in found if p.name != "forgetting.json"
                  and _wanted(json.loads(p.read_text()), config, settings))


def item_lists(protocol: str, res: dict) -> dict[str, dict]:
    """metric -> {doc_hash, values}: the per-item scores behind each metric (GLUE: each item's
    [prediction, label] of the metric's subset), as the record holds them."""
    items = res.get("items")
    if not items:
        return {}
    out = {}
    for metric in res.get("metrics", {}):
        if metric.endswith("_stderr"):
            continue
        if metric in items:
            out[metric] = {"doc_hash": items["doc_hash"], "values": items[metric]}
        elif protocol == "glue":
            subset = glue_kind(metric)[1]
            keep = [i for i, s in enumerate(items.get("subset", [None] * len(items["doc_hash"]))) if s == subset]
            out[metric] = {"doc_hash": [items["doc_hash"][i] for i in keep],
                           "values": [[items["prediction"][i], items["label"][i]] for i in keep]}
    return out


def sha256(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def entries(rec: dict) -> list[dict]:
    """One entry per protocol of an evaluation record."""
    return [{"family": rec["family"], "model": rec["model"], "method": rec.get("method", "base"),
             "rank": rec.get("rank"), "seed": rec.get("seed"), "task": rec["task"], "protocol": protocol,
             "eval_dtype": rec.get("eval_dtype"), "n_test": res.get("n_test"), "metrics": res.get("metrics", {}),
             "items_sha256": {m: sha256(v) for m, v in item_lists(protocol, res).items()}}
            for protocol, res in rec.get("results", {}).items()]


def _order(entry: dict) -> tuple:
    return (entry["family"], entry["model"], entry["method"], -1 if entry["rank"] is None else entry["rank"],
            -1 if entry["seed"] is None else entry["seed"], entry["task"], entry["protocol"])


def made_by(leaderboard: dict, records: list[dict]) -> dict:
    """What produced the grid: the tables' and the records' commits, the config, package versions,
    each distinct machine (hardware) with its record count, and the eval dtypes' counts."""
    config = leaderboard.get("config") or {}
    machines = Counter(json.dumps(r.get("hardware") or {}, sort_keys=True) for r in records)
    packages: dict[str, set] = {}
    for r in records:
        for name, version in (r.get("packages") or {}).items():
            packages.setdefault(name, set()).add(str(version))
    return {"commit": (leaderboard.get("stamp") or {}).get("commit"),
            "record_commits": sorted({r["git_commit"] for r in records if r.get("git_commit")}),
            "config": config, "config_hash": provenance.config_hash(config),
            "packages": {name: sorted(v) for name, v in sorted(packages.items())},
            "machines": [{"hardware": json.loads(h), "records": n}
                         for h, n in sorted(machines.items(), key=lambda kv: (-kv[1], kv[0]))],
            "eval_dtypes": dict(sorted(Counter(str(r.get("eval_dtype")) for r in records).items()))}


def snapshot(grid: str | Path, files: list[str | Path] | None = None) -> dict:
    """The published file's content for a grid, less the date. `files`: its evaluation records
    (default: those record_files finds)."""
    leaderboard = board(grid)
    paths = record_files(grid, leaderboard.get("config") or {}) if files is None else files
    records = [json.loads(Path(p).read_text()) for p in paths]
    return {**leaderboard, "published": made_by(leaderboard, records),
            "records": sorted((e for r in records for e in entries(r)), key=_order)}


def publish(grid: str | Path, out: str | Path, files: list[str | Path] | None = None,
            date: str | None = None) -> dict:
    """Write the published reference of a finished grid to `out` (atomically)."""
    content = snapshot(grid, files)
    content["published"]["date"] = date or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    atomic.write_json(out, content)
    return content
