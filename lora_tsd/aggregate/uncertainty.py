"""The tables' uncertainty columns: a CI for every cell and a paired comparison of every
method with a baseline (LoRA) at the same model, rank, task and metric, from per-item scores."""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from . import stats

BASELINE = "lora"
KEY = ["family", "protocol", "model", "method", "rank", "task", "metric"]


def _rng(key) -> np.random.Generator:
    """Draws fixed by the row, so a table rebuilt from the same records is identical."""
    return np.random.default_rng(zlib.crc32(repr(tuple(key)).encode()))


def task_lists(summary: pd.DataFrame) -> dict[tuple, list[str]]:
    """(family, protocol, model) -> its tasks: what a row's 'avg' averages."""
    real = summary[summary.task != "avg"]
    return {k: list(dict.fromkeys(g.task)) for k, g in real.groupby(["family", "protocol", "model"], sort=False)}


def seeds_of(items: dict) -> list[int]:
    """Every seed the records hold (computed once per table, not per row)."""
    return sorted({k[-1] for k in items})


def seed_items(items: dict, row: dict, tasks: list[str], seeds: list[int]) -> dict[int, list[stats.Items]]:
    """seed -> the items of each of `tasks` for a table row, for those of `seeds` that have
    every task (a seed missing one is left out, as the tables' averages do)."""
    out = {}
    for seed in seeds:
        keys = [(*(row[c] for c in KEY[:5]), task, row["metric"], seed) for task in tasks]
        if all(k in items for k in keys):
            out[seed] = [items[k] for k in keys]
    return out


def _tasks(row, lists) -> list[str]:
    return lists.get((row["family"], row["protocol"], row["model"]), []) if row["task"] == "avg" else [row["task"]]


def intervals(summary: pd.DataFrame, items: dict) -> pd.DataFrame:
    """ci_low, ci_high per summary row (NaN where the records hold no per-item scores)."""
    lists, seeds = task_lists(summary), seeds_of(items)
    lows, highs = [], []
    for row in summary[KEY].to_dict("records"):
        per_seed = seed_items(items, row, _tasks(row, lists), seeds)
        low, high = stats.cell_ci(list(per_seed.values()), rng=_rng(row.values())) if per_seed else (np.nan, np.nan)
        lows.append(low)
        highs.append(high)
    return summary.assign(ci_low=lows, ci_high=highs)


def comparisons(summary: pd.DataFrame, items: dict, baseline: str = BASELINE) -> pd.DataFrame:
    """One row per (method != baseline, rank, model, task, metric) with a baseline row at the
    same model and rank: diff (method - baseline, points), its CI, p and `significant` (the
    CI excludes 0)."""
    lists, seeds = task_lists(summary), seeds_of(items)
    rows = []
    for row in summary[~summary.method.isin([baseline, "base"])][KEY].to_dict("records"):
        tasks = _tasks(row, lists)
        mine = seed_items(items, row, tasks, seeds)
        theirs = seed_items(items, {**row, "method": baseline}, tasks, seeds)
        if not (set(mine) & set(theirs)):
            continue
        result = stats.paired(mine, theirs, rng=_rng(row.values()))
        rows.append({**row, "baseline": baseline, **result,
                     "significant": result["ci_low"] > 0 or result["ci_high"] < 0})
    return pd.DataFrame(rows, columns=KEY + ["baseline", "diff", "ci_low", "ci_high", "p", "seeds", "n_items",
                                             "significant"])
