"""What the task-specific-direction methods selected: the change-rate profile over singular
directions (tsd_profile) and the overlap of selections between seeds and phases (tsd_overlap)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..analysis import (DASHING, analysed, end_size, load_analysis, module_type, overlap_table, rate_profile,
                        selection_counts)
from .style import MARKS, colour, grid, legend_below, method_order, placeholder


LABELS = {"lora_dash": "LoRA-Dash", "lora_init": "LoRA-Init", "lora_tsd": "LoRA-TSD", "full": "full fine-tuning"}


def missing_analysis(train_records: list[dict], methods: tuple) -> str:
    """What a TSD figure lacks: the methods, or (when they ran) their analysis files."""
    names = " / ".join([LABELS[m] for m in methods if m in LABELS] +
                       (["dash ablation"] if any(m not in LABELS for m in methods) else []))
    if not any(r.get("method") in methods for r in train_records):
        return f"no {names} cell in this grid"
    return f"the {names} cells of this grid left no usable tsd_analysis.npz\n(none found in their run folders)"


def representative(train_records: list[dict]) -> tuple[dict, Path] | None:
    """The cell Figure 1 is drawn from: the first LoRA-Dash cell, else LoRA-TSD, else any run
    whose analysis has end rates."""
    runs = [(r, p) for r, p in analysed(train_records)
            if any("rates_end" in f for f in load_analysis(p).values())]
    for method in DASHING:
        for r, p in runs:
            if r["method"] == method:
                return r, p
    return runs[0] if runs else None


def profile_figure(train_records: list[dict]) -> Figure:
    """The paper's Figure 1 from our runs: change rate per singular direction (layer mean),
    with how many layers selected each direction at the switch and at the end."""
    chosen = representative(train_records)
    if chosen is None:
        return placeholder("Change rate per singular direction", missing_analysis(train_records, DASHING))
    record, path = chosen
    arrays = load_analysis(path)
    s = end_size(record, arrays)
    end, switch = rate_profile(path), rate_profile(path, "rates_switch")
    counts = selection_counts(path, s)
    types = list(end)
    fig, axes = grid(len(types), panel=(5.2, 3.8))
    for ax, t in zip(axes, types):
        layers = sum(module_type(m) == t for m in arrays)
        x = np.arange(len(end[t]))
        # Zero rates (numerically dead directions) have no place on a log axis.
        ax.plot(x, np.where(end[t] > 0, end[t], np.nan), color=colour(record["method"]), lw=1,
                label="rate at the end", gid="rates_end")
        if t in switch:
            ax.plot(x[:len(switch[t])], np.where(switch[t] > 0, switch[t], np.nan), color="k", lw=0.8,
                    alpha=0.6, label="rate at the switch", gid="rates_switch")
        ax.set_yscale("log")
        ax.set_xlabel("singular-value index (0 = largest)")
        ax.set_ylabel("change rate |uᵢᵀ ΔW vᵢ| / σᵢ (layer mean)")
        ax.set_title(f"{t} ({layers} layers)", fontsize=10)
        ax.grid(alpha=0.3)
        twin = ax.twinx()
        for phase, marker, c in MARKS:
            if phase in counts.get(t, {}):
                idx = np.flatnonzero(counts[t][phase])
                twin.scatter(idx, counts[t][phase][idx], marker=marker, s=22, facecolors="none", edgecolors=c,
                             linewidths=1, gid=f"selected {phase}")
        twin.set_ylim(0, layers * 1.15 + 0.5)
        twin.set_ylabel("layers selecting the index", fontsize=9)
    phases = {phase for c in counts.values() for phase in c}
    lines = [Line2D([], [], color=colour(record["method"]), label="rate at the end")] + \
        ([Line2D([], [], color="k", alpha=0.6, label="rate at the switch")] if switch else []) + \
        [Line2D([], [], marker=m, mfc="none", mec=c, ls="", label=f"layers selecting it at {phase}")
         for phase, m, c in MARKS if phase in phases]
    legend_below(fig, lines)
    fig.suptitle(f"Change rate per singular direction: {record['model']} on {record['train_set']}, "
                 f"{record['method']} r{record['rank']} seed {record['seed']} (top-{s} at the end)", fontsize=11)
    return fig


KINDS = ["seeds at init", "seeds at switch", "seeds at end", "init vs end", "switch vs end"]

KIND_COLOURS = ["#a6d854", "#8da0cb", "#66c2a5", "#e5c494", "#fc8d62"]


def overlap_figure(train_records: list[dict]) -> Figure:
    """Overlap of the selected direction sets: a panel per (model, train_set), a group of bars
    per (method, rank), a bar per comparison (its mean over seed pairs or seeds, whiskers
    min-max), chance level as a black tick."""
    table = overlap_table(train_records)
    if table.empty:
        return placeholder("Overlap of selected directions",
                           missing_analysis(train_records, ("lora_dash", "lora_init", "lora_tsd")))
    keys = list(dict.fromkeys(zip(table["model"], table["train_set"])))
    kinds = [k for k in KINDS if k in set(table["kind"])] + sorted(set(table["kind"]) - set(KINDS))
    widest = max(len(table[(table.model == m) & (table.train_set == t)].groupby(["method", "rank"]))
                 for m, t in keys)
    fig, axes = grid(len(keys), panel=(max(5.5, 1.0 + 0.45 * widest * len(kinds)), 3.8), ncols=2)
    for ax, (model, train_set) in zip(axes, keys):
        part = table[(table.model == model) & (table.train_set == train_set)]
        cells = sorted(dict.fromkeys(zip(part["method"], part["rank"])),
                       key=lambda mr: (method_order(part["method"]).index(mr[0]), mr[1]))
        width = 0.8 / len(kinds)
        for j, kind in enumerate(kinds):
            stats = [part[(part.method == m) & (part["rank"] == r) & (part.kind == kind)] for m, r in cells]
            x = np.array([i for i, st in enumerate(stats) if not st.empty]) - 0.4 + width * (j + 0.5)
            stats = [st for st in stats if not st.empty]
            if not stats:
                continue
            mean = np.array([st["overlap"].mean() for st in stats])
            spread = np.array([[m - st["overlap"].min(), st["overlap"].max() - m] for m, st in zip(mean, stats)]).T
            ax.bar(x, mean, width, yerr=spread, color=KIND_COLOURS[KINDS.index(kind) % 5] if kind in KINDS
                   else "#b3b3b3", edgecolor="k", linewidth=0.4, capsize=2, error_kw={"elinewidth": 0.8},
                   gid=kind)
            ax.hlines([st["chance"].mean() for st in stats], x - width / 2, x + width / 2, color="k", lw=1.5)
            for xi, v, top in zip(x, mean, mean + spread[1]):
                ax.text(xi, top + 0.02, f"{v:.2f}", ha="center", va="bottom", fontsize=7, rotation=90)
        ax.set_xticks(range(len(cells)), [f"{m}\nr{r}" for m, r in cells], fontsize=9)
        for tick, (m, _) in zip(ax.get_xticklabels(), cells):
            tick.set_color(colour(m))
        ax.set_ylim(0, 1.22)
        ax.set_ylabel("overlap |S_a ∩ S_b| / s")
        ax.set_title(f"{model} on {train_set}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles = [Patch(facecolor=KIND_COLOURS[KINDS.index(k) % 5] if k in KINDS else "#b3b3b3", edgecolor="k",
                     label=k) for k in kinds] + [Line2D([], [], color="k", lw=1.5, label="chance (s/n)")]
    legend_below(fig, handles)
    fig.suptitle("Overlap of the selected direction sets (mean over adapted matrices; bar = mean over seed "
                 "pairs or seeds, whiskers min–max)", fontsize=11)
    return fig
