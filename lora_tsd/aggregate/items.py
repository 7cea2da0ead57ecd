"""Per-item scores from evaluation records (results[protocol]["items"]), keyed like the tables'
rows, for the confidence intervals and paired comparisons (stats)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .stats import STATISTICS, Items

GLUE_KINDS = [k for k in STATISTICS if k != "mean"]


def glue_kind(metric: str) -> tuple[str, str | None]:
    """A GLUE score key -> (statistic, subset): 'accuracy_matched' -> ('accuracy', 'matched')."""
    for kind in sorted(GLUE_KINDS, key=len, reverse=True):
        if metric == kind:
            return kind, None
        if metric.startswith(kind + "_"):
            return kind, metric[len(kind) + 1:]
    raise KeyError(f"no per-item statistic for GLUE metric {metric!r} (known: {GLUE_KINDS})")


def _protocol_items(protocol: str, res: dict) -> dict[str, Items]:
    items = res.get("items")
    if not items:
        return {}
    ids = [f"{i}:{h}" for i, h in zip(items["doc_id"], items["doc_hash"])]
    out = {}
    for metric in res["metrics"]:
        if metric.endswith("_stderr"):
            continue
        if protocol == "glue":
            kind, subset = glue_kind(metric)
            keep = [i for i, s in enumerate(items["subset"]) if s == subset]
            dtype = float if kind in ("pearson", "spearmanr") else int
            out[metric] = Items(kind, tuple(ids[i] for i in keep),
                                np.array([items["prediction"][i] for i in keep], dtype=dtype),
                                np.array([items["label"][i] for i in keep], dtype=dtype))
        elif metric in items:
            values = items[metric]
            nested = bool(values) and isinstance(values[0], list)  # IFEval: checks per prompt
            a = [sum(v) for v in values] if nested else values
            b = [len(v) for v in values] if nested else [1] * len(values)
            out[metric] = Items("mean", tuple(ids), np.array(a, dtype=float), np.array(b, dtype=float))
    return out


def load(eval_files: list[str | Path]) -> dict[tuple, Items]:
    """(family, protocol, model, method, rank, task, metric, seed) -> Items; rank as the
    tables write it ('-' for the base model), seed -1 for the base model."""
    out = {}
    for path in eval_files:
        rec = json.loads(Path(path).read_text())
        rank = "-" if rec.get("rank") is None else str(rec["rank"])
        seed = -1 if rec.get("seed") is None else int(rec["seed"])
        for protocol, res in rec.get("results", {}).items():
            for metric, items in _protocol_items(protocol, res).items():
                key = (rec["family"], protocol, rec["model"], rec.get("method", "base"), rank, rec["task"], metric, seed)
                out[key] = items
    return out
