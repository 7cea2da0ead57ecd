"""One table per question of the paper's exploration, from the cells' train records and their
tsd_analysis.npz. The true TSDs of a cell are those of the `full` cell with its model, train
set and seed (else that model and train set's lowest seed: `truth_seed` says which). Every
table is empty (with its columns) where the grid lacks what it needs; missing() says what."""
from __future__ import annotations

from collections import defaultdict
from itertools import combinations

import numpy as np
import pandas as pd

from ...data.tasks import FAMILIES
from ..analysis import PHASES, analysed, load_analysis, module_type, selected_at_end
from . import measures as ms

FULL = "full"
ALL = "all"  # the row over every module type
ABLATIONS = ("lora", "lora_dash", "lora_dash_top", "lora_dash_bottom", "lora_dash_random")


class Cells:
    """The grid's analysed cells, their arrays read once: the full cells (the truth) by
    (model, train_set, seed), and the adapter cells."""

    def __init__(self, train_records: list[dict]):
        self.truths, self.adapters = {}, []
        for record, path in analysed(train_records):
            arrays = {m: f for m, f in load_analysis(path).items() if "rates_end" in f}
            if not arrays:
                continue
            if record["method"] == FULL:
                self.truths.setdefault((record["model"], record["train_set"], int(record["seed"])), (record, arrays))
            else:
                self.adapters.append((record, arrays))

    def truth(self, record: dict):
        """(full record, arrays) for an adapter cell, or None."""
        model, train_set, seed = record["model"], record["train_set"], int(record["seed"])
        if (model, train_set, seed) in self.truths:
            return self.truths[(model, train_set, seed)]
        seeds = sorted(s for m, t, s in self.truths if (m, t) == (model, train_set))
        return self.truths[(model, train_set, seeds[0])] if seeds else None

    def pairs(self):
        """(adapter record, its arrays, truth record, truth arrays) for every adapter cell with a truth."""
        for record, arrays in self.adapters:
            found = self.truth(record)
            if found is not None:
                yield record, arrays, *found


def _cell(record: dict) -> dict:
    return {"model": record["model"], "train_set": record["train_set"], "method": record["method"],
            "rank": int(record["rank"]), "seed": int(record["seed"])}


def _by_type(rows: list[dict], keys: list[str], values: list[str]) -> list[dict]:
    """Mean of `values` per keys + module type, plus an 'all' row over every matrix."""
    if not rows:
        return []
    df = pd.DataFrame(rows)
    typed = df.groupby(keys + ["module_type"], sort=False)
    out = typed[values].mean().join(typed.size().rename("matrices")).reset_index()
    every = df.groupby(keys, sort=False)
    out = pd.concat([out, every[values].mean().join(every.size().rename("matrices")).reset_index()
                    .assign(module_type=ALL)], ignore_index=True)
    return out.to_dict("records")


SPECTRUM_COLUMNS = ["model", "train_set", "seed", "module_type", "r", "directions", "median_index",
                    "relative_position", "in_top_r", "in_bottom_r", "between", "matrices"]


def spectrum_table(cells: Cells, ranks: list[int], k: int = ms.AMPLIFIED) -> pd.DataFrame:
    """Where full fine-tuning's top-k TSDs sit: their median index and relative position
    (0 largest singular value, 1 smallest live one), and the shares inside PiSSA's top-r,
    MiLoRA's bottom-r and between, for each rank r of the grid."""
    rows = []
    for (model, train_set, seed), (_, arrays) in cells.truths.items():
        for module, f in arrays.items():
            top = ms.ranked(f["rates_end"])[:k]
            live = ms.live_count(f["singular_values"])
            for r in ranks:
                rows.append({"model": model, "train_set": train_set, "seed": seed, "r": r,
                             "module_type": module_type(module), "directions": live,
                             **ms.positions(top, f["singular_values"]), **ms.regions(top, live, r)})
    out = _by_type(rows, ["model", "train_set", "seed", "r"],
                   ["directions", "median_index", "relative_position", "in_top_r", "in_bottom_r", "between"])
    return pd.DataFrame(out, columns=SPECTRUM_COLUMNS)


RECALL_COLUMNS = ["model", "train_set", "method", "rank", "seed", "truth_seed", "step", "module_type", "recall",
                  "accuracy", "chance_recall", "chance_accuracy", "matrices"]


def _snapshots(f: dict, record: dict) -> list[tuple[int, np.ndarray]]:
    """(step, the top directions then) from the trace, else the end's rates alone."""
    if "trace_steps" in f:
        return list(zip(f["trace_steps"].tolist(), f["trace_indices"]))
    return [(int(record.get("steps") or len(record.get("losses", []))), ms.ranked(f["rates_end"]))]


def recall_table(cells: Cells) -> pd.DataFrame:
    """Recall (true top-4 among the method's top-8) and accuracy (its top-8 inside the true
    top-16) at every recorded step, per module type, with what random directions would score."""
    rows = []
    for record, arrays, truth_record, truth in cells.pairs():
        for module, f in arrays.items():
            if module not in truth:
                continue
            true = ms.ranked(truth[module]["rates_end"])
            n = len(true)
            for step, top in _snapshots(f, record):
                found = np.asarray(top)[:ms.FOUND]
                rows.append({**_cell(record), "truth_seed": int(truth_record["seed"]), "step": int(step),
                             "module_type": module_type(module),
                             "recall": ms.recall(found, true[:ms.TRUE_TOP]),
                             "accuracy": ms.accuracy(found, true[:ms.TRUE_POOL]),
                             "chance_recall": ms.chance_recall(n), "chance_accuracy": ms.chance_accuracy(n)})
    keys = ["model", "train_set", "method", "rank", "seed", "truth_seed", "step"]
    out = _by_type(rows, keys, ["recall", "accuracy", "chance_recall", "chance_accuracy"])
    return pd.DataFrame(out, columns=RECALL_COLUMNS)


AMPLIFICATION_COLUMNS = ["model", "train_set", "method", "rank", "seed", "truth_seed", "module_type", "projection",
                         "vs_full", "vs_lora", "matrices"]


def amplification_table(cells: Cells, k: int = ms.AMPLIFIED) -> pd.DataFrame:
    """How far each cell's final dW moves along the true top-k TSDs: the mean projection
    |u_i^T dW v_i| over them, as a share of full fine-tuning's own (vs_full) and against LoRA's
    cell of the same model, train set, rank and seed (vs_lora, a ratio of means)."""
    rows = []
    for record, arrays, truth_record, truth in cells.pairs():
        for module, f in arrays.items():
            if module in truth:
                t = truth[module]
                top = ms.ranked(t["rates_end"])[:k]
                mine = ms.projections(f["rates_end"], f["singular_values"], top).mean()
                rows.append({**_cell(record), "truth_seed": int(truth_record["seed"]),
                             "module_type": module_type(module), "projection": mine,
                             "full_projection": ms.projections(t["rates_end"], t["singular_values"], top).mean()})
    keys = ["model", "train_set", "method", "rank", "seed", "truth_seed"]
    out = pd.DataFrame(_by_type(rows, keys, ["projection", "full_projection"]))
    if out.empty:
        return pd.DataFrame(columns=AMPLIFICATION_COLUMNS)
    out["vs_full"] = out["projection"] / out["full_projection"]
    where = ["model", "train_set", "rank", "seed", "module_type"]
    lora = out[out.method == "lora"].set_index(where)["projection"]
    out["vs_lora"] = [p / lora.get(tuple(r[w] for w in where), np.nan) for p, (_, r) in
                      zip(out["projection"], out.iterrows())]
    return out[AMPLIFICATION_COLUMNS]


SELECTION_COLUMNS = ["model", "train_set", "method", "rank", "seed", "truth_seed", "comparison", "overlap", "chance",
                     "matrices"]


def selection_table(cells: Cells) -> pd.DataFrame:
    """How a method's selections relate to the true TSDs: the pre-launch set (LoRA-Dash's
    switch, LoRA-Init's init) and the end's top rates against the true top set of the same
    size, and each phase against the end (overlap |A ∩ B| / s, chance s / n)."""
    rows = []
    for record, arrays, truth_record, truth in cells.pairs():
        sets = defaultdict(list)
        for module, f in arrays.items():
            if module not in truth:
                continue
            true, n = ms.ranked(truth[module]["rates_end"]), len(f["rates_end"])
            for phase in PHASES:
                if f"indices_{phase}" in f:
                    chosen = np.asarray(f[f"indices_{phase}"])
                    s = len(chosen)
                    sets[f"{phase} vs true"].append((ms.recall(chosen, true[:s]), s / n))
                    sets[f"{phase} vs end"].append((ms.recall(chosen, selected_at_end(f["rates_end"], s)), s / n))
            s = len(f.get("indices_switch", [])) or ms.AMPLIFIED
            sets["end vs true"].append((ms.recall(selected_at_end(f["rates_end"], s), true[:s]), s / n))
        for comparison, values in sets.items():
            rows.append({**_cell(record), "truth_seed": int(truth_record["seed"]), "comparison": comparison,
                         "overlap": float(np.mean([v for v, _ in values])),
                         "chance": float(np.mean([c for _, c in values])), "matrices": len(values)})
    return pd.DataFrame(rows, columns=SELECTION_COLUMNS)


OVERLAP_COLUMNS = ["model", "method", "rank", "seed", "train_set_a", "train_set_b", "k", "overlap", "chance", "matrices"]


def task_overlap_table(cells: Cells, k: int = ms.AMPLIFIED) -> pd.DataFrame:
    """Task-specificity: the overlap of the top-k directions of two train sets on one model,
    matrix by matrix (full fine-tuning's: the true TSDs; each adapter method's too), with the
    overlap of two random k-sets (k / n)."""
    groups = defaultdict(dict)
    for (model, train_set, seed), (record, arrays) in cells.truths.items():
        groups[(model, FULL, 0, seed)][train_set] = arrays
    for record, arrays in cells.adapters:
        groups[(record["model"], record["method"], int(record["rank"]), int(record["seed"]))][record["train_set"]] = arrays
    rows = []
    for (model, method, rank, seed), by_set in groups.items():
        for a, b in combinations(sorted(by_set), 2):
            shared = [m for m in by_set[a] if m in by_set[b]]
            if not shared:
                continue
            values = [(ms.recall(ms.ranked(by_set[a][m]["rates_end"])[:k], ms.ranked(by_set[b][m]["rates_end"])[:k]),
                       k / len(by_set[a][m]["rates_end"])) for m in shared]
            rows.append({"model": model, "method": method, "rank": rank, "seed": seed, "train_set_a": a,
                         "train_set_b": b, "k": k, "overlap": float(np.mean([v for v, _ in values])),
                         "chance": float(np.mean([c for _, c in values])), "matrices": len(values)})
    return pd.DataFrame(rows, columns=OVERLAP_COLUMNS)


ABLATION_COLUMNS = ["model", "family", "rank", "method", "directions", "seeds", "score", "std", "metric",
                    "vs_lora_along_tsds"]

DIRECTIONS = {"lora": "none (plain LoRA)", "lora_dash": "TSDs (largest change rate)",
              "lora_dash_top": "top singular (PiSSA's)", "lora_dash_bottom": "bottom singular (MiLoRA's)",
              "lora_dash_random": "random (seeded)"}


def ablation_table(summary: pd.DataFrame, amplification: pd.DataFrame) -> pd.DataFrame:
    """The dash along the TSDs against the same dash along other directions: each family's
    headline score (its Family.select_on protocol and metric, averaged over tasks where the
    grid has an average; mean, std over seeds) and the
    projection along the true TSDs relative to LoRA's (mean over seeds and train sets)."""
    if summary.empty or not set(ABLATIONS[1:]) & set(summary["method"]):
        return pd.DataFrame(columns=ABLATION_COLUMNS)
    rows = []
    part = summary[summary.method.isin(ABLATIONS)]
    for (model, family, rank), cell in part.groupby(["model", "family", "rank"], sort=False):
        # The family's headline (a sweep's default selection metric), where the grid scored it.
        protocol, metric = FAMILIES[family].select_on if family in FAMILIES else ("", None)
        cell = cell[cell.protocol == (protocol if protocol in set(cell.protocol) else cell.protocol.iloc[0])]
        task = "avg" if (cell.task == "avg").any() else cell.task.iloc[0]
        head = cell[cell.task == task]
        head = head[head.metric == (metric if metric in set(head.metric) else head.metric.iloc[0])]
        for _, r in head.iterrows():
            amp = amplification[(amplification.model == model) & (amplification.method == r["method"]) &
                                (amplification["rank"].astype(str) == str(rank)) & (amplification.module_type == ALL)]
            rows.append({"model": model, "family": family, "rank": rank, "method": r["method"],
                         "directions": DIRECTIONS.get(r["method"], r["method"]), "seeds": int(r["seeds"]),
                         "score": r["mean"], "std": r["std"], "metric": f"{task} {r['protocol']} {r['metric']}",
                         "vs_lora_along_tsds": amp["vs_lora"].mean() if not amp.empty else np.nan})
    order = {m: i for i, m in enumerate(ABLATIONS)}
    out = pd.DataFrame(rows, columns=ABLATION_COLUMNS)
    return out.sort_values(["model", "family", "rank", "method"], key=lambda c: c.map(order) if c.name == "method"
                           else c, kind="stable").reset_index(drop=True)


def missing(train_records: list[dict], cells: Cells) -> list[str]:
    """What the grid lacks for the questions, each a sentence (empty: nothing)."""
    out = []
    methods = {r.get("method") for r in train_records}
    if FULL not in methods:
        out.append("no full fine-tuning cell (method 'full'): there are no true TSDs to compare with; "
                   "add 'full' to methods (same model, train set and seed as the cells it explains)")
    elif not cells.truths:
        out.append("the full fine-tuning cells left no change rates in their tsd_analysis.npz (trained before "
                   "the exploration existed? rerun them)")
    if not any("trace_steps" in f for _, arrays in cells.adapters for f in arrays.values()):
        out.append("no adapter cell recorded a trace (train.analysis_every): recall and accuracy are at the end only")
    if len({t for _, t, _ in cells.truths}) < 2:
        out.append("fewer than two train sets with a full cell on one model: no cross-task overlap")
    if not set(ABLATIONS[2:]) & methods:
        out.append("no dash ablation (lora_dash_top, lora_dash_bottom, lora_dash_random) in methods")
    dtypes = {(r["model"], r.get("base_dtype")) for r in train_records if r.get("method") != FULL}
    truth_dtypes = {(r["model"], r.get("base_dtype")) for r, _ in cells.truths.values()}
    if truth_dtypes and dtypes - truth_dtypes:
        out.append("adapter cells ran on base weights of another dtype than the full cells "
                   f"({sorted(d for _, d in dtypes)} against {sorted(d for _, d in truth_dtypes)}): the SVDs "
                   "that number the directions differ by that rounding; set train.base_dtype: float32 for both")
    return out
