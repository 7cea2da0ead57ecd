"""The exploration's figures, one per question (tables.py holds the numbers): where
the true TSDs sit in the spectrum, how early each method finds them, how far each moves along
them, how task-specific they are, and the dash along other directions. A figure with nothing
to draw says what the grid lacks."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..analysis import module_type, rate_profile, selection_counts
from ..figures.style import RANK_MARKERS, colour, grid, legend_below, method_order, placeholder
from . import measures as ms
from .tables import ALL, FULL, Cells

TRAIN_STYLES = ["-", "--", "-.", ":"]
CHANCE = "#e7298a"  # visible on every method's bar colour, full fine-tuning's black included


def _types(types) -> list[str]:
    """The paper's q, k, v first, then the other module types."""
    types = list(dict.fromkeys(types))
    first = [t for t in ("q_proj", "k_proj", "v_proj", "query", "key", "value") if t in types]
    return first + sorted(t for t in types if t not in first and t != ALL)


def spectrum_figure(cells: Cells, ranks: list[int], why: str = "") -> Figure:
    """Full fine-tuning's change rate per singular direction (layer mean), the layers whose
    true top-8 hold each index, and PiSSA's top-r and MiLoRA's bottom-r regions shaded."""
    if not cells.truths:
        return placeholder("Where the true TSDs sit in the spectrum", why or "no full fine-tuning cell")
    truths = sorted(cells.truths.items())
    first = {}
    for key, (record, _) in truths:  # one seed per (model, train set)
        first.setdefault(key[:2], (record, key))
    types = _types(module_type(m) for _, (_, arrays) in truths for m in arrays)
    # Each truth's file read once: its rate profile and true top-k counts per module type.
    drawn = {}
    for key, (record, _) in first.items():
        path = f"{record['run_dir']}/tsd_analysis.npz"
        drawn[key] = (rate_profile(path), selection_counts(path, ms.AMPLIFIED))
    fig, axes = grid(len(types), panel=(5.2, 3.8))
    r = max(ranks)
    for ax, t in zip(axes, types):
        twin = ax.twinx()
        n = 0
        for j, ((model, train_set), (profiles, counts)) in enumerate(drawn.items()):
            profile = profiles.get(t)
            if profile is None:
                continue
            n = max(n, len(profile))
            ax.plot(np.arange(len(profile)), np.where(profile > 0, profile, np.nan), color="k", lw=1,
                    ls=TRAIN_STYLES[j % 4], gid=f"rates {train_set}")
            chosen = counts.get(t, {}).get("end")
            if chosen is not None:
                idx = np.flatnonzero(chosen)
                twin.scatter(idx, chosen[idx], marker="o", s=18, facecolors="none", edgecolors="#d62728",
                             alpha=0.8, gid=f"true top {train_set}")
        ax.axvspan(-0.5, r - 0.5, color=colour("pissa"), alpha=0.15, lw=0)
        ax.axvspan(n - r - 0.5, n - 0.5, color=colour("milora"), alpha=0.15, lw=0)
        ax.set_yscale("log")
        ax.set_xlabel("singular-value index (0 = largest)")
        ax.set_ylabel("change rate of dW* (layer mean)")
        ax.set_title(t, fontsize=10)
        ax.grid(alpha=0.3)
        twin.set_ylabel(f"layers with it in the true top-{ms.AMPLIFIED}", fontsize=9)
        twin.set_ylim(bottom=0)
    handles = [Line2D([], [], color="k", ls=TRAIN_STYLES[j % 4], label=f"full fine-tuning on {ts}")
               for j, (_, ts) in enumerate(drawn)] + \
        [Line2D([], [], marker="o", mfc="none", mec="#d62728", ls="", label=f"layers with it in the true top-{ms.AMPLIFIED}"),
         Patch(color=colour("pissa"), alpha=0.3, label=f"PiSSA's top-{r}"),
         Patch(color=colour("milora"), alpha=0.3, label=f"MiLoRA's bottom-{r}")]
    legend_below(fig, handles)
    models = ", ".join(sorted({m for m, _ in first}))
    fig.suptitle(f"Where the true TSDs sit: full fine-tuning's change rate per singular direction ({models})",
                 fontsize=11)
    return fig


def recall_figure(recall: pd.DataFrame, why: str = "") -> Figure:
    """Recall (solid) and accuracy (dashed) of each method's top-8 against the true TSDs over
    training steps, a row of panels per train set (q, k, v and all matrices), mean over seeds."""
    if recall.empty:
        return placeholder("How early each method finds the true TSDs", why or "no adapter cell with a full cell")
    types = [t for t in _types(recall.module_type) if t in ("q_proj", "k_proj", "v_proj", "query", "key", "value")]
    types = (types or _types(recall.module_type)[:3]) + [ALL]
    sets = sorted(recall.train_set.unique())
    fig, axes = grid(len(types) * len(sets), panel=(4.2, 3.4), ncols=len(types))
    ranks = sorted(recall["rank"].unique())
    for i, train_set in enumerate(sets):
        for j, t in enumerate(types):
            ax = axes[i * len(types) + j]
            part = recall[(recall.train_set == train_set) & (recall.module_type == t)]
            for method in method_order(part.method):
                for rank in ranks:
                    cell = part[(part.method == method) & (part["rank"] == rank)].groupby("step").mean(numeric_only=True)
                    if cell.empty:
                        continue
                    style = {"color": colour(method), "marker": RANK_MARKERS[ranks.index(rank) % 8], "ms": 3}
                    ax.plot(cell.index, cell["recall"], lw=1.2, gid=f"recall {method} r{rank}", **style)
                    ax.plot(cell.index, cell["accuracy"], lw=1, ls="--", gid=f"accuracy {method} r{rank}", **style)
            if not part.empty:
                ax.axhline(part["chance_accuracy"].mean(), color="grey", ls=":", lw=1)
                ax.axhline(part["chance_recall"].mean(), color="grey", ls="-.", lw=0.8)
            ax.set_ylim(-0.03, 1.03)
            ax.set_xlabel("optimizer step")
            ax.set_ylabel("share")
            ax.set_title(f"{t} — {train_set}", fontsize=10)
            ax.grid(alpha=0.3)
    methods = method_order(recall.method)
    handles = [Line2D([], [], color=colour(m), label=m) for m in methods] + \
        [Line2D([], [], color="k", marker=RANK_MARKERS[k % 8], ls="", label=f"r{r}") for k, r in enumerate(ranks)] + \
        [Line2D([], [], color="k", lw=1.2, label=f"recall: true top-{ms.TRUE_TOP} in its top-{ms.FOUND}"),
         Line2D([], [], color="k", ls="--", label=f"accuracy: its top-{ms.FOUND} in the true top-{ms.TRUE_POOL}"),
         Line2D([], [], color="grey", ls=":", label="accuracy by chance"),
         Line2D([], [], color="grey", ls="-.", label="recall by chance")]
    legend_below(fig, handles)
    fig.suptitle("How early each method finds the true TSDs (mean over seeds)", fontsize=11)
    return fig


def _bars(ax, labels, means, lows, highs, colours, gid):
    x = np.arange(len(labels))
    ax.bar(x, means, 0.7, yerr=[np.array(means) - lows, highs - np.array(means)], color=colours, edgecolor="k",
           linewidth=0.4, capsize=2, gid=gid)
    for xi, v in zip(x, means):
        ax.text(xi, v, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, labels, fontsize=8, rotation=30, ha="right")


def amplification_figure(amplification: pd.DataFrame, why: str = "") -> Figure:
    """Each method's final projection along the true top-8 TSDs relative to LoRA's (1 = as
    LoRA), all matrices; bar = mean over seeds, whiskers min-max. A panel per train set."""
    part = amplification[(amplification.module_type == ALL) & amplification.vs_lora.notna()]
    if part.empty:
        return placeholder("How far each method moves along the true TSDs",
                           why or "no LoRA cell beside the other methods and a full cell")
    sets = sorted(part.train_set.unique())
    fig, axes = grid(len(sets), panel=(6.0, 3.8), ncols=2)
    for ax, train_set in zip(axes, sets):
        cell = part[part.train_set == train_set]
        keys = sorted(dict.fromkeys(zip(cell.method, cell["rank"])),
                      key=lambda mr: (method_order(cell.method).index(mr[0]), mr[1]))
        stats = [cell[(cell.method == m) & (cell["rank"] == r)]["vs_lora"] for m, r in keys]
        _bars(ax, [f"{m} r{r}" for m, r in keys], [s.mean() for s in stats], np.array([s.min() for s in stats]),
              np.array([s.max() for s in stats]), [colour(m) for m, _ in keys], "vs_lora")
        ax.axhline(1.0, color="k", lw=1)
        ax.set_ylabel(f"projection on true top-{ms.AMPLIFIED} / LoRA's")
        ax.set_title(train_set, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"How far each method's final dW moves along the true top-{ms.AMPLIFIED} TSDs, relative to LoRA "
                 "(mean |uᵢᵀ ΔW vᵢ| over them and all matrices)", fontsize=11)
    return fig


def task_overlap_figure(overlap: pd.DataFrame, why: str = "") -> Figure:
    """Overlap of two train sets' top-k directions on one model: full fine-tuning's (the true
    TSDs) and each method's, chance as a tick; a panel per model."""
    if overlap.empty:
        return placeholder("How task-specific the TSDs are", why or "fewer than two train sets on one model")
    models = sorted(overlap.model.unique())
    fig, axes = grid(len(models), panel=(6.5, 3.8), ncols=2)
    for ax, model in zip(axes, models):
        part = overlap[overlap.model == model]
        keys = sorted(dict.fromkeys(zip(part.method, part["rank"], part.train_set_a, part.train_set_b)),
                      key=lambda k: (k[0] != FULL, method_order(part.method).index(k[0]), k[1], k[2], k[3]))
        stats = [part[(part.method == m) & (part["rank"] == r) & (part.train_set_a == a) & (part.train_set_b == b)]
                 for m, r, a, b in keys]
        labels = [f"{'full (true TSDs)' if m == FULL else f'{m} r{r}'}\n{a}–{b}" for m, r, a, b in keys]
        _bars(ax, labels, [s.overlap.mean() for s in stats], np.array([s.overlap.min() for s in stats]),
              np.array([s.overlap.max() for s in stats]), [colour(k[0]) for k in keys], "overlap")
        x = np.arange(len(keys))
        ax.hlines([s.chance.mean() for s in stats], x - 0.35, x + 0.35, color=CHANCE, lw=2, gid="chance")
        ax.set_ylim(0, 1.1)
        ax.set_ylabel(f"overlap of top-{int(part.k.iloc[0])} sets")
        ax.set_title(model, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    legend_below(fig, [Line2D([], [], color=CHANCE, lw=2, label="chance (k/n)")])
    fig.suptitle("How task-specific the directions are: the same model's top directions on two train sets "
                 "(mean over matrices; whiskers min–max over seeds)", fontsize=11)
    return fig


def ablation_figure(ablation: pd.DataFrame, why: str = "") -> Figure:
    """The dash along the TSDs against the dash along other directions: each family's headline
    score with its 95% CI over seeds and items (the leaderboard's; ± std where it has none), on
    an axis from 0; a panel per (model, family, rank)."""
    if ablation.empty:
        return placeholder("The dash along other directions", why or "no dash ablation in this grid")
    keys = list(dict.fromkeys(zip(ablation.model, ablation.family, ablation["rank"])))
    fig, axes = grid(len(keys), panel=(5.5, 3.8), ncols=2)
    for ax, (model, family, rank) in zip(axes, keys):
        part = ablation[(ablation.model == model) & (ablation.family == family) & (ablation["rank"] == rank)]
        mean = part["score"].to_numpy(float)
        std = part["std"].fillna(0).to_numpy(float)
        low = part["ci_low"].fillna(pd.Series(mean - std, index=part.index)).to_numpy(float)
        high = part["ci_high"].fillna(pd.Series(mean + std, index=part.index)).to_numpy(float)
        _bars(ax, [f"{m}\n{d}" for m, d in zip(part.method, part.directions)], mean, low, high,
              [colour(m) for m in part.method], "score")
        top = float(np.nanmax(high))
        ax.set_ylim(0, max(100.0, top * 1.05) if top > 60 else top * 1.15)  # a percentage axis once scores are high
        ax.set_ylabel(part.metric.iloc[0])
        ax.set_title(f"{model} — {family}, r{rank} ({int(part.seeds.max())} seed(s))", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("The dash along the TSDs or along other directions (bars: mean over seeds; whiskers: 95% CI over "
                 "seeds and test items)", fontsize=11)
    return fig
