"""Reading what cells recorded for the analysis figures (analysis.npz: change rates and selected
directions per adapted matrix) into tables: selection counts, overlaps between seeds and
between phases, the switch step. Pure functions, tested without drawing."""
from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from ..methods.registry import METHODS

DASHING = tuple(name for name, spec in METHODS.items() if spec.switches)  # methods with a dash phase
PHASES = ("init", "switch")  # selections recorded during training (LoRA-Init's, LoRA-Dash's)


def selected_at_end(rates_end, s: int) -> np.ndarray:
    """The s directions with the largest change rate at the end, largest first (ties by lower
    index, as tsd.top_directions selects them)."""
    rates = np.asarray(rates_end, float)
    return np.argsort(-rates, kind="stable")[:min(int(s), rates.size)]


def overlap(a, b) -> float:
    """|A ∩ B| / s for two selected sets of (normally) equal size s."""
    a, b = (set(np.asarray(list(x)).ravel().tolist()) for x in (a, b))
    size = max(len(a), len(b))
    return len(a & b) / size if size else float("nan")


def module_type(module: str) -> str:
    return module.rsplit(".", 1)[-1]


def load_analysis(npz_path) -> dict[str, dict[str, np.ndarray]]:
    """{module: {field: array}} from a run's tsd_analysis.npz ('<module>|<field>' keys)."""
    out: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    with np.load(npz_path) as data:
        for key in data.files:
            module, field = key.rsplit("|", 1)
            out[module][field] = data[key]
    return dict(out)


def rate_profile(npz_path, field: str = "rates_end") -> dict[str, np.ndarray]:
    """{module type: the change rate per singular-value index, averaged over the layers of
    that type}. Layers of one type share a shape; a mismatch is cut to the shortest."""
    by_type = defaultdict(list)
    for module, fields in load_analysis(npz_path).items():
        if field in fields:
            by_type[module_type(module)].append(np.asarray(fields[field], float))
    return {t: np.mean([r[:min(map(len, rs))] for r in rs], axis=0) for t, rs in by_type.items()}


def end_size(record: dict, arrays: dict[str, dict[str, np.ndarray]]) -> int:
    """s for the end selection: the switch's set size, else tsd.dash_s (default 8)."""
    for fields in arrays.values():
        if "indices_switch" in fields:
            return len(fields["indices_switch"])
    return int((record.get("tsd_config") or {}).get("dash_s", 8))


def selection_counts(npz_path, s: int) -> dict[str, dict[str, np.ndarray]]:
    """{module type: {phase: how many layers of that type selected each index}} for the
    phases the run recorded and the end (top-s rates at the end)."""
    out: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    for module, fields in load_analysis(npz_path).items():
        n = len(fields["rates_end"]) if "rates_end" in fields else len(fields.get("singular_values", []))
        chosen = {p: fields[f"indices_{p}"] for p in PHASES if f"indices_{p}" in fields}
        if "rates_end" in fields:
            chosen["end"] = selected_at_end(fields["rates_end"], s)
        for phase, idx in chosen.items():
            counts = out[module_type(module)].setdefault(phase, np.zeros(n, int))
            np.add.at(counts, np.asarray(idx, int)[:len(counts)], 1)
    return dict(out)


def analysed(train_records: list[dict]) -> list[tuple[dict, Path]]:
    """(record, npz path) of the runs that left an analysis file, in a fixed order."""
    out = [(r, Path(r["run_dir"]) / "tsd_analysis.npz") for r in train_records if r.get("run_dir")]
    out = [(r, p) for r, p in out if p.is_file()]
    return sorted(out, key=lambda rp: (rp[0]["model"], rp[0]["train_set"], rp[0]["method"],
                                       int(rp[0]["rank"]), int(rp[0]["seed"])))


def overlap_table(train_records: list[dict]) -> pd.DataFrame:
    """Agreement of the selected direction sets, per (model, train_set, method, rank) with a
    recorded selection (LoRA-Init's init, LoRA-Dash's switch): between every two seeds at each
    phase and at the end, and within a run between each phase and the end (the end's top
    rates taken with the phase's set size). Overlap is the mean over the adapted matrices both
    sides have; 'chance' is the mean s/n two random s-sets of n directions would share."""
    cells = defaultdict(dict)
    for record, path in analysed(train_records):
        arrays = load_analysis(path)
        if any(f"indices_{p}" in f for f in arrays.values() for p in PHASES):
            key = (record["model"], record["train_set"], record["method"], int(record["rank"]))
            cells[key][int(record["seed"])] = (record, arrays)
    rows = []

    def add(key, kind, comparison, pairs):
        if pairs:
            rows.append({"model": key[0], "train_set": key[1], "method": key[2], "rank": key[3],
                         "kind": kind, "comparison": comparison,
                         "overlap": float(np.mean([overlap(a, b) for a, b, _ in pairs])),
                         "chance": float(np.mean([len(a) / n for a, _, n in pairs])), "modules": len(pairs)})

    def sets(arrays, phase, s_end):
        out = {}
        for module, f in arrays.items():
            if phase == "end" and "rates_end" in f:
                out[module] = (selected_at_end(f["rates_end"], s_end), len(f["rates_end"]))
            elif f"indices_{phase}" in f:
                n = len(f.get("rates_end", f.get("singular_values", [])))
                out[module] = (np.asarray(f[f"indices_{phase}"]), n)
        return out

    for key, runs in cells.items():
        seeds = sorted(runs)
        phases = [p for p in PHASES if any(f"indices_{p}" in f for f in runs[seeds[0]][1].values())] + ["end"]
        for phase in phases:
            for a, b in combinations(seeds, 2):
                sa = sets(runs[a][1], phase, end_size(*runs[a]))
                sb = sets(runs[b][1], phase, end_size(*runs[b]))
                add(key, f"seeds at {phase}", f"seeds s{a}–s{b} at {phase}",
                    [(sa[m][0], sb[m][0], sa[m][1]) for m in sa if m in sb])
        for seed in seeds:
            arrays = runs[seed][1]
            for phase in phases[:-1]:
                chosen = sets(arrays, phase, 0)
                # The end's set the same size as the phase's, module by module.
                add(key, f"{phase} vs end", f"{phase} vs end, seed {seed}",
                    [(idx, selected_at_end(arrays[m]["rates_end"], len(idx)), n)
                     for m, (idx, n) in chosen.items() if "rates_end" in arrays[m]])
    return pd.DataFrame(rows, columns=["model", "train_set", "method", "rank", "kind", "comparison", "overlap",
                                       "chance", "modules"])


def switch_step(record: dict) -> int | None:
    """The optimizer step of LoRA-Dash's switch: as recorded, else tsd.dash_t (steps when
    >= 1, a fraction of the run's planned steps below 1; None when it counts forward calls,
    tsd.dash_t_unit: forward); None for methods without one."""
    if record.get("method") not in DASHING:
        return None
    if record.get("switch_step") is not None:
        return int(record["switch_step"])
    t = (record.get("tsd_config") or {}).get("dash_t")
    if t is None or (record.get("tsd_config") or {}).get("dash_t_unit", "step") != "step":
        return None
    if t >= 1:
        return int(t)
    steps = record.get("planned_steps") or (record.get("train_config") or {}).get("steps") or len(record["losses"])
    return int(round(t * steps))
