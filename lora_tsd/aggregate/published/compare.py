"""A fresh run against the published reference, cell by cell (a summary row: family, protocol,
model, method, rank, task, metric; task averages included):
- identical: every seed's value equals the published one and, where both sides hash the
  per-item scores, so does every seed's items hash (an average: every task's);
- within: the published mean lies inside this run's own 95% CI (over items and seeds);
- outside: neither; missing: the cell is on one side only.
Also where the two runs' provenance differs (commits, config, packages, machine, dtypes) and
which paired comparisons with LoRA change their ▲/▼ mark."""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

from ... import atomic
from .. import tables
from . import stamp

CELL = ["family", "protocol", "model", "method", "rank", "task", "metric"]
VERDICTS = ["identical", "within", "outside", "missing"]
# The hardware fields (provenance.hardware) that choose kernels or precision: what can move a number.
MACHINE = ["cpu", "cpu_flags", "cpu_capability", "onednn", "torch_threads", "float32_matmul_precision",
           "deterministic_algorithms", "kernel_pins", "compute_dtype", "gpu", "gpu_capability", "cuda",
           "cuda_matmul_tf32", "cudnn_tf32"]
ABSENT = "(absent)"
SIDES = {"published": "the published file", "fresh": "this run"}


def _key(row: dict) -> tuple:
    return tuple(str(row[c]) if c == "rank" else row[c] for c in CELL)


def _rank(value) -> str:
    return "-" if value is None else str(value)


def per_seed(records: list[dict]) -> dict[tuple, dict]:
    """(family, protocol, model, method, rank, task, metric) -> {seed: (value, items hash)}."""
    out: dict[tuple, dict] = defaultdict(dict)
    for r in records:
        for metric, value in r["metrics"].items():
            if not metric.endswith("_stderr"):
                key = (r["family"], r["protocol"], r["model"], r["method"], _rank(r["rank"]), r["task"], metric)
                out[key][r["seed"]] = (value, r["items_sha256"].get(metric))
    return out


def tasks_of(summary: list[dict]) -> dict[tuple, list[str]]:
    """(family, protocol, model) -> its tasks: what an 'avg' row averages."""
    out: dict[tuple, list[str]] = {}
    for r in summary:
        if r["task"] != "avg":
            tasks = out.setdefault((r["family"], r["protocol"], r["model"]), [])
            tasks += [] if r["task"] in tasks else [r["task"]]
    return out


def evidence(key: tuple, seeds: dict, tasks: dict) -> dict:
    """{(task, seed): (value, hash)} behind a cell: its task's records, or an average's tasks'."""
    family, protocol, model, method, rank, task, metric = key
    names = tasks.get((family, protocol, model), []) if task == "avg" else [task]
    return {(t, seed): v for t in names
            for seed, v in seeds.get((family, protocol, model, method, rank, t, metric), {}).items()}


def same(a: dict, b: dict) -> bool:
    """Every value equal, and every items hash that both sides have."""
    if not a or a.keys() != b.keys():
        return False
    return all(a[k][0] == b[k][0] and (a[k][1] is None or b[k][1] is None or a[k][1] == b[k][1]) for k in a)


def _inside(mean, low, high) -> bool:
    return None not in (mean, low, high) and low <= mean <= high


def cells(published: dict, fresh: dict) -> list[dict]:
    """Every cell of either side with both means, this run's CI and the verdict."""
    rows = {side: {_key(r): r for r in doc["summary"]} for side, doc in (("published", published), ("fresh", fresh))}
    seeds = {side: per_seed(doc.get("records", [])) for side, doc in (("published", published), ("fresh", fresh))}
    tasks = {side: tasks_of(doc["summary"]) for side, doc in (("published", published), ("fresh", fresh))}
    out = []
    for key in [*rows["published"], *(k for k in rows["fresh"] if k not in rows["published"])]:
        p, f = rows["published"].get(key), rows["fresh"].get(key)
        cell = {**dict(zip(CELL, key)), "published_mean": p and p.get("mean"), "fresh_mean": f and f.get("mean"),
                "fresh_ci_low": f and f.get("ci_low"), "fresh_ci_high": f and f.get("ci_high")}
        if p is None or f is None:
            cell.update(verdict="missing", only_in="fresh" if p is None else "published")
        elif same(evidence(key, seeds["published"], tasks["published"]), evidence(key, seeds["fresh"], tasks["fresh"])):
            cell["verdict"] = "identical"
        else:
            cell["verdict"] = "within" if _inside(p.get("mean"), f.get("ci_low"), f.get("ci_high")) else "outside"
        out.append(cell)
    return out


def label(cell: dict) -> str:
    rank = "" if cell["rank"] == "-" else f" r{cell['rank']}"
    return f"{cell['model']} {cell['method']}{rank} {cell['family']}/{cell['protocol']} {cell['task']} {cell['metric']}"


def _few(names: list[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def verdict_line(listed: list[dict]) -> str:
    n = Counter(c["verdict"] for c in listed)
    text = (f"{n['identical']} of {len(listed)} cells identical, {n['within']} within this run's 95% CI, "
            f"{n['outside']} outside")
    outside = [label(c) for c in listed if c["verdict"] == "outside"]
    text += f" ({_few(outside)})" if outside else ""
    if n["missing"]:
        only = sum(c.get("only_in") == "published" for c in listed)
        text += f", {n['missing']} missing ({only} only in the published file, {n['missing'] - only} only in this run)"
    return text


def config_diff(a, b, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, published value, fresh value) wherever two configs differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in config_diff(a.get(k, ABSENT), b.get(k, ABSENT), f"{prefix}{k}.")]
    return [] if a == b else [(prefix.rstrip("."), a, b)]


def machine_values(block: dict, field: str) -> list:
    """A hardware field's distinct values over a side's machines (cpu_flags: their union)."""
    values = [m["hardware"][field] for m in block.get("machines", []) if field in m["hardware"]]
    if field == "cpu_flags":
        return sorted({flag for flags in values for flag in flags})
    distinct = {json.dumps(v, sort_keys=True): v for v in values}
    return [distinct[k] for k in sorted(distinct)]


def differences(published: dict, fresh: dict) -> list[dict]:
    """{what, published, fresh} wherever the two runs' provenance differs."""
    a, b = published.get("published", {}), fresh.get("published", {})
    out = []

    def add(what, x, y, **extra):
        if x != y:
            out.append({"what": what, "published": x, "fresh": y, **extra})

    add("commit (tables)", a.get("commit"), b.get("commit"))
    add("commits (records)", a.get("record_commits"), b.get("record_commits"))
    add("config hash", a.get("config_hash"), b.get("config_hash"))
    for path, x, y in config_diff(a.get("config") or {}, b.get("config") or {}):
        add(f"config key {path}", x, y)
    for name in sorted(set(a.get("packages", {})) | set(b.get("packages", {}))):
        add(f"package {name}", a.get("packages", {}).get(name), b.get("packages", {}).get(name))
    for field in MACHINE:
        x, y = machine_values(a, field), machine_values(b, field)
        extra = {"only_published": sorted(set(x) - set(y)), "only_fresh": sorted(set(y) - set(x))} \
            if field == "cpu_flags" else {}
        add(f"machine {field}", x, y, **extra)
    add("eval dtypes (records)", a.get("eval_dtypes"), b.get("eval_dtypes"))
    return out


def _show(value) -> str:
    if value is None or value == []:
        return "none"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def difference_text(d: dict) -> str:
    if "only_published" in d:  # the flags that differ, not both lists
        parts = [f"only in {SIDES[side]}: {_show(d['only_' + side])}" for side in SIDES if d["only_" + side]]
        return f"{d['what']}: {'; '.join(parts)}"
    return f"{d['what']}: {_show(d['published'])} in the published file, {_show(d['fresh'])} in this run"


def mark(row: dict) -> str:
    """▲/▼ where a paired comparison with LoRA is significant (the tables' mark, bare)."""
    return tables.arrow(row).strip()


def flips(published: dict, fresh: dict) -> list[dict]:
    """Paired comparisons on both sides whose mark differs."""
    theirs = {_key(r): mark(r) for r in published.get("comparisons", [])}
    ours = {_key(r): mark(r) for r in fresh.get("comparisons", [])}
    return [{**dict(zip(CELL, k)), "published": theirs[k], "fresh": ours[k]}
            for k in theirs if k in ours and theirs[k] != ours[k]]


def flip_text(f: dict) -> str:
    return f"{label(f)}: {f['published'] or 'no mark'} in the published file, {f['fresh'] or 'no mark'} in this run"


def compare(grid: str | Path, published_path: str | Path, files: list[str | Path] | None = None) -> dict:
    """The comparison of a finished grid (its leaderboard.json and records; `files`: the
    records, default all stamp.record_files finds) with a published reference file."""
    published = stamp.read_json(published_path, "published reference")
    fresh = stamp.snapshot(grid, files)
    listed = cells(published, fresh)
    counts = {v: sum(c["verdict"] == v for c in listed) for v in VERDICTS}
    return {"reference": str(published_path), "grid": str(grid), "verdict": verdict_line(listed),
            "ok": counts["outside"] == 0 and counts["missing"] == 0, "counts": counts,
            "published": {k: published.get("published", {}).get(k) for k in ("commit", "config_hash", "date")},
            "fresh": {k: fresh["published"].get(k) for k in ("commit", "config_hash")},
            "provenance": differences(published, fresh), "flips": flips(published, fresh), "cells": listed}


def summary_lines(result: dict) -> list[str]:
    """What the terminal shows: the verdict, then where provenance differs and the flipped marks."""
    lines = [result["verdict"]]
    if result["provenance"]:
        lines += ["Provenance differs:"] + [f"  {difference_text(d)}" for d in result["provenance"]]
    else:
        lines.append("Provenance: nothing differs (commits, config, packages, machine, dtypes).")
    lines += [f"Mark flips: {flip_text(f)}" for f in result["flips"]]
    return lines


def _num(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def to_markdown(result: dict) -> str:
    pub, fresh = result["published"], result["fresh"]
    lines = ["# Comparison with the published reference", "", f"**{result['verdict']}**", "",
             f"- Published: `{result['reference']}` (tables at commit `{pub.get('commit')}`, config "
             f"`{pub.get('config_hash')}`, published {pub.get('date')}).",
             f"- This run: `{result['grid']}` (tables at commit `{fresh.get('commit')}`, config "
             f"`{fresh.get('config_hash')}`).",
             "- identical: every seed's value equals the published one, and so does every test item's score where "
             "the records hold them; within: the published mean lies inside this run's 95% CI (over test items and "
             "seeds); outside: it does not; missing: the cell is in one of the two only.",
             "", "## Provenance: where the two runs differ", ""]
    lines += [f"- {difference_text(d)}" for d in result["provenance"]] or \
        ["Nothing differs: the same commits, config, package versions, machine and dtypes."]
    lines += ["", "## Paired comparisons with LoRA whose mark flips", ""]
    lines += [f"- {flip_text(f)}" for f in result["flips"]] or ["None: every ▲/▼ is as published."]
    lines += ["", "## Cells", "",
              "| family | protocol | model | method | rank | task | metric | published | this run | "
              "this run's 95% CI | verdict |", "|" + "---|" * 11]
    for c in result["cells"]:
        ci = "-" if c["fresh_ci_low"] is None else f"[{c['fresh_ci_low']:.2f}, {c['fresh_ci_high']:.2f}]"
        verdict = c["verdict"] + (f" (only in {SIDES[c['only_in']]})" if c["verdict"] == "missing" else "")
        lines.append(f"| {' | '.join(str(c[k]) for k in CELL)} | {_num(c['published_mean'])} | "
                     f"{_num(c['fresh_mean'])} | {ci} | {verdict} |")
    return "\n".join(lines) + "\n"


def write(result: dict, md: str | Path, out_json: str | Path) -> None:
    atomic.write_text(md, to_markdown(result))
    atomic.write_json(out_json, result)
