"""Where a finished grid's wall time went, from Snakemake's own records: the run's log
(.snakemake/log/<start>.snakemake.log: its name is the start, its last write the end) and each
job's start and end (.snakemake/metadata, one record per output file).

Wall time is split by a sweep over the run: while n jobs run, each gets 1/n of the moment;
moments with no job running are overhead (DAG building, scheduling, the end of the run).
Busy time is the jobs' own durations added up (core-seconds with one thread per job).

    python benchmarks/grid_time.py [WORKDIR] [--log LOG] [--json OUT]
"""
from __future__ import annotations

import argparse
import base64
import json
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path

CATEGORIES = {
    "assets": {"fetch_wheel", "build_model", "extract_task_data", "download_model", "prepare_task",
               "build_train_set", "forgetting_text"},
    "training": {"train", "eva_init", "gradient_init", "corda_init", "svd_cache"},
    "evaluation": {"evaluate", "evaluate_base", "validate", "forgetting", "forgetting_base"},
    "tables": {"aggregate", "plots", "select", "tuned", "sensitivity", "explore", "compare"},
}


def category(rule: str) -> str:
    return next((c for c, rules in CATEGORIES.items() if rule in rules), "training" if rule.startswith("train")
                else "other")


def run_window(workdir: Path, log: Path | None = None) -> tuple[float, float, Path]:
    """(start, end) of a snakemake invocation: the newest log unless one is named."""
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    if log is None and not logs:
        raise SystemExit(f"grid_time: no snakemake log under {workdir}/.snakemake/log (run the grid there first)")
    log = log or logs[-1]
    stamp = re.match(r"(\d{4}-\d{2}-\d{2}T\d{6}\.\d+)", log.name).group(1)
    start = datetime.strptime(stamp, "%Y-%m-%dT%H%M%S.%f").timestamp()
    return start, log.stat().st_mtime, log


def jobs(workdir: Path, start: float, end: float) -> list[dict]:
    """One entry per job of the window (a job's outputs share its job hash and times)."""
    seen = {}
    for f in (workdir / ".snakemake" / "metadata").iterdir():
        rec = json.loads(f.read_text())
        if rec.get("starttime") is None or not (start - 1 <= rec["starttime"] <= end + 1):
            continue
        try:
            output = base64.b64decode(f.name.replace("@", "/") + "==").decode()
        except ValueError:
            output = f.name
        key = (rec["rule"], rec.get("job_hash"))  # a job's outputs each have a record
        job = seen.setdefault(key, {"rule": rec["rule"], "start": rec["starttime"], "end": rec["endtime"],
                                    "outputs": []})
        job["start"], job["end"] = min(job["start"], rec["starttime"]), max(job["end"], rec["endtime"])
        job["outputs"].append(output)
    return sorted(seen.values(), key=lambda j: j["start"])


def split(jobs: list[dict], start: float, end: float) -> dict:
    """Wall seconds per category (sweep, shared equally among running jobs), overhead, busy
    seconds and job counts per category."""
    events = sorted({start, end, *(j["start"] for j in jobs), *(j["end"] for j in jobs)})
    wall = defaultdict(float)
    for a, b in zip(events, events[1:]):
        running = [j for j in jobs if j["start"] <= a and j["end"] >= b]
        if not running:
            wall["overhead"] += b - a
            continue
        for j in running:
            wall[category(j["rule"])] += (b - a) / len(running)
    busy, count = defaultdict(float), defaultdict(int)
    for j in jobs:
        busy[category(j["rule"])] += j["end"] - j["start"]
        count[category(j["rule"])] += 1
    per_rule = defaultdict(lambda: {"jobs": 0, "busy_s": 0.0})
    for j in jobs:
        per_rule[j["rule"]]["jobs"] += 1
        per_rule[j["rule"]]["busy_s"] += j["end"] - j["start"]
    return {"wall_s": end - start, "wall_split_s": dict(wall), "busy_s": dict(busy), "jobs": dict(count),
            "rules": dict(per_rule)}


def table(result: dict) -> str:
    rows = ["| part | wall time | share | jobs | busy (job-seconds) |", "|---|---|---|---|---|"]
    for part in ["assets", "training", "evaluation", "tables", "other", "overhead"]:
        w = result["wall_split_s"].get(part, 0.0)
        if not w and part not in ("overhead",) and not result["jobs"].get(part):
            continue
        rows.append(f"| {part} | {w / 60:.1f} min | {100 * w / result['wall_s']:.0f}% | "
                    f"{result['jobs'].get(part, '-')} | {result['busy_s'].get(part, 0.0) / 60:.1f} min |")
    rows.append(f"| total | {result['wall_s'] / 60:.1f} min | 100% | {sum(result['jobs'].values())} | "
                f"{sum(result['busy_s'].values()) / 60:.1f} min |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", nargs="?", default=".", type=Path)
    parser.add_argument("--log", type=Path, help="the invocation's log (default: the newest)")
    parser.add_argument("--json", type=Path, help="also write the split as JSON here")
    args = parser.parse_args()
    start, end, log = run_window(args.workdir, args.log)
    result = {"log": str(log), **split(jobs(args.workdir, start, end), start, end)}
    print(table(result))
    for rule, r in sorted(result["rules"].items(), key=lambda kv: -kv[1]["busy_s"]):
        print(f"  {rule}: {r['jobs']} jobs, {r['busy_s'] / r['jobs']:.1f} s each")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
