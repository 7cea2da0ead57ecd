"""One table per question of the paper's exploration, from the cells' train records and their
tsd_analysis.npz. The true TSDs of a cell are those of the `full` cell with its model, train
set and seed (else that model and train set's lowest seed: `truth_seed` says which). Every
table is empty (with its columns) where the grid lacks what it needs; missing() says what."""
from __future__ import annotations

from collections import defaultdict
from itertools import combinations

import numpy as np
import pandas as pd

from ...data.tasks import FAMILIES, TRAIN_SETS
from ..analysis import PHASES, analysed, end_size, load_analysis, module_type, overlap, selected_at_end
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
    (0 largest singular value, 1 smallest), and the shares inside PiSSA's top-r, MiLoRA's
    bottom-r and between, for each rank r of the grid."""
    rows = []
    for (model, train_set, seed), (_, arrays) in cells.truths.items():
        for module, f in arrays.items():
            top, n = ms.ranked(f["rates_end"])[:k], len(f["rates_end"])
            for r in ranks:
                rows.append({"model": model, "train_set": train_set, "seed": seed, "r": r,
                             "module_type": module_type(module), "directions": n,
                             **ms.positions(top, n), **ms.regions(top, n, r)})
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
    lora = out.loc[out.method == "lora", where + ["projection"]].rename(columns={"projection": "lora"})
    out = out.merge(lora, on=where, how="left")
    out["vs_lora"] = out["projection"] / out["lora"]
    return out[AMPLIFICATION_COLUMNS]


SELECTION_COLUMNS = ["model", "train_set", "method", "rank", "seed", "truth_seed", "comparison", "overlap", "chance",
                     "matrices"]


def selection_table(cells: Cells) -> pd.DataFrame:
    """How a method's selections relate to the true TSDs: the pre-launch set (LoRA-Dash's
    switch, LoRA-Init's init) and the end's top rates against the true top set of the same
    size (the end's: the switch's s, else tsd.dash_s), and each phase against the end (overlap
    |A ∩ B| / s, chance s / n)."""
    rows = []
    for record, arrays, truth_record, truth in cells.pairs():
        sets = defaultdict(list)
        s_end = end_size(record, arrays)
        for module, f in arrays.items():
            if module not in truth:
                continue
            true, n = ms.ranked(truth[module]["rates_end"]), len(f["rates_end"])
            for phase in PHASES:
                if f"indices_{phase}" in f:
                    chosen = np.asarray(f[f"indices_{phase}"])
                    s = len(chosen)
                    sets[f"{phase} vs true"].append((overlap(chosen, true[:s]), s / n))
                    sets[f"{phase} vs end"].append((overlap(chosen, selected_at_end(f["rates_end"], s)), s / n))
            sets["end vs true"].append((overlap(selected_at_end(f["rates_end"], s_end), true[:s_end]), s_end / n))
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
            values = [(overlap(selected_at_end(by_set[a][m]["rates_end"], k), selected_at_end(by_set[b][m]["rates_end"], k)),
                       k / len(by_set[a][m]["rates_end"])) for m in shared]
            rows.append({"model": model, "method": method, "rank": rank, "seed": seed, "train_set_a": a,
                         "train_set_b": b, "k": k, "overlap": float(np.mean([v for v, _ in values])),
                         "chance": float(np.mean([c for _, c in values])), "matrices": len(values)})
    return pd.DataFrame(rows, columns=OVERLAP_COLUMNS)


ABLATION_COLUMNS = ["model", "family", "rank", "method", "directions", "seeds", "score", "std", "ci_low", "ci_high",
                    "metric", "vs_lora_along_tsds"]

DIRECTIONS = {"lora": "none (plain LoRA)", "lora_dash": "TSDs (largest change rate)",
              "lora_dash_top": "top singular (PiSSA's)", "lora_dash_bottom": "bottom singular (MiLoRA's)",
              "lora_dash_random": "random (seeded)"}


def headline(summary: pd.DataFrame, family: str) -> pd.DataFrame:
    """A family's summary rows of its headline score: its Family.select_on protocol and metric
    where the grid scored them (else its first), averaged over tasks where there is an average."""
    protocol, metric = FAMILIES[family].select_on if family in FAMILIES else ("", None)
    rows = summary[summary.protocol == (protocol if protocol in set(summary.protocol) else summary.protocol.iloc[0])]
    rows = rows[rows.task == ("avg" if (rows.task == "avg").any() else rows.task.iloc[0])]
    return rows[rows.metric == (metric if metric in set(rows.metric) else rows.metric.iloc[0])]


def ablation_table(summary: pd.DataFrame, amplification: pd.DataFrame) -> pd.DataFrame:
    """The dash along the TSDs against the same dash along other directions: each family's
    headline score (mean, std over seeds, the leaderboard's 95% CI over seeds and items) and the
    projection along the true TSDs relative to LoRA's (mean over the family's train sets and seeds)."""
    if summary.empty or not set(ABLATIONS[1:]) & set(summary["method"]):
        return pd.DataFrame(columns=ABLATION_COLUMNS)
    part = summary[summary.method.isin(ABLATIONS)].assign(rank=lambda d: pd.to_numeric(d["rank"]))
    amp = amplification[amplification.module_type == ALL].assign(
        family=lambda d: d.train_set.map(lambda t: TRAIN_SETS[t].family if t in TRAIN_SETS else None))
    along = amp.groupby(["model", "family", "method", "rank"])["vs_lora"].mean()
    rows = []
    for (model, family, rank), cell in part.groupby(["model", "family", "rank"], sort=True):
        for _, r in headline(cell, family).iterrows():
            rows.append({"model": model, "family": family, "rank": int(rank), "method": r["method"],
                         "directions": DIRECTIONS.get(r["method"], r["method"]), "seeds": int(r["seeds"]),
                         "score": r["mean"], "std": r["std"], "ci_low": r.get("ci_low", np.nan),
                         "ci_high": r.get("ci_high", np.nan), "metric": " ".join(dict.fromkeys([r["task"], r["protocol"], r["metric"]])),
                         "vs_lora_along_tsds": along.get((model, family, r["method"], int(rank)), np.nan)})
    out = pd.DataFrame(rows, columns=ABLATION_COLUMNS)
    order = out.method.map({m: i for i, m in enumerate(ABLATIONS)})
    return out.assign(_o=order).sort_values(["model", "family", "rank", "_o"], kind="stable") \
              .drop(columns="_o").reset_index(drop=True)


QUESTIONS = ("spectrum", "recall", "amplification", "task_overlap", "ablation")


def missing(train_records: list[dict], cells: Cells) -> list[tuple[str, tuple[str, ...]]]:
    """What the grid lacks, each (a sentence, the questions it leaves unanswered or weakens)."""
    out = []
    methods = {r.get("method") for r in train_records}
    truthless = ("spectrum", "recall", "amplification", "task_overlap")
    if FULL not in methods:
        out.append(("no full fine-tuning cell (method 'full'): there are no true TSDs to compare with; add 'full' "
                    "to methods (same model, train set and seed as the cells it explains)", truthless))
    elif not cells.truths:
        out.append(("the full fine-tuning cells recorded no change rates: set train.analysis_every (they measure "
                    "dW* = W - W0 only then) and rerun them", truthless))
    alone = sorted({f"{r['model']}/{r['train_set']}" for r, _ in cells.adapters if cells.truth(r) is None})
    if cells.truths and alone:
        out.append((f"adapter cells without a full cell of their model and train set, left out: {', '.join(alone)}",
                    ("recall", "amplification")))
    if not any("trace_steps" in f for _, arrays in cells.adapters for f in arrays.values()):
        out.append(("no adapter cell recorded snapshots (train.analysis_every): recall and accuracy at the end only",
                    ("recall",)))
    per_model = defaultdict(set)
    for model, train_set, _ in cells.truths:
        per_model[model].add(train_set)
    if not any(len(sets) > 1 for sets in per_model.values()):
        out.append(("no model has full fine-tuning cells on two train sets: no cross-task overlap of true TSDs",
                    ("task_overlap",)))
    if not set(ABLATIONS[2:]) & methods:
        out.append(("no dash ablation (lora_dash_top, lora_dash_bottom, lora_dash_random) in methods", ("ablation",)))
    out += _caveats(train_records, cells, methods)
    return out


def _caveats(train_records: list[dict], cells: Cells, methods: set) -> list[tuple[str, tuple[str, ...]]]:
    out = []
    dtypes = {r.get("base_dtype") for r in train_records if r.get("method") != FULL}
    truth_dtypes = {r.get("base_dtype") for r, _ in cells.truths.values()}
    if truth_dtypes and dtypes - truth_dtypes:
        out.append((f"adapter cells ran on {sorted(map(str, dtypes))} base weights, the full cells on "
                    f"{sorted(map(str, truth_dtypes))}: the SVDs that number the directions differ by that rounding; "
                    "set train.base_dtype: float32 for every cell", QUESTIONS))
    if "dora" in methods:
        out.append(("DoRA's directions are those of its low-rank update (alpha/r) B A, its magnitude rescaling "
                    "left out", ("recall", "amplification")))
    return out
