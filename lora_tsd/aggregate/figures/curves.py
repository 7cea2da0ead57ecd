"""Training-loss curves per method, smoothed, with the band over seeds and the switch marked."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..analysis import switch_step
from .style import LOSS_STYLES, colour, grid, legend_below, method_handles, method_order, placeholder


def smooth(values, window: int) -> np.ndarray:
    """Trailing moving average (the first window-1 steps have none)."""
    values = np.asarray(values, float)
    if window <= 1 or len(values) < window:
        return values
    return np.convolve(values, np.ones(window) / window, mode="valid")


def seed_band(curves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max over seeds per step; a seed that stopped early (diverged) counts
    only for the steps it ran."""
    stacked = np.full((len(curves), max(map(len, curves))), np.nan)
    for i, c in enumerate(curves):
        stacked[i, :len(c)] = c
    return np.nanmean(stacked, axis=0), np.nanmin(stacked, axis=0), np.nanmax(stacked, axis=0)


def loss_figure(train_records: list[dict]) -> Figure:
    """Training loss per step, a panel per (model, train_set): per (method, rank) the mean over
    seeds of a moving average, with the seeds' min-max as a band."""
    records = [r for r in train_records if r.get("losses")]
    if not records:
        return placeholder("Training loss", "no training record with losses in this grid")
    keys = list(dict.fromkeys((r["model"], r["train_set"]) for r in records))
    fig, axes = grid(len(keys), panel=(6.0, 3.8), ncols=2)
    all_ranks = sorted({int(r["rank"]) for r in records})
    methods, switched, seeds = set(), False, set()
    for ax, key in zip(axes, keys):
        cell = [r for r in records if (r["model"], r["train_set"]) == key]
        window = max(1, max(len(r["losses"]) for r in cell) // 50)  # ~50 points of smoothing per run
        order = method_order(r["method"] for r in cell)
        for method, rank in sorted({(r["method"], int(r["rank"])) for r in cell},
                                   key=lambda mr: (order.index(mr[0]), mr[1])):
            runs = [r for r in cell if (r["method"], int(r["rank"])) == (method, rank)]
            mean, low, high = seed_band([smooth(r["losses"], window) for r in runs])
            steps = np.arange(len(mean)) + min(window, min(len(r["losses"]) for r in runs))  # a window's last step
            c = colour(method)
            ax.fill_between(steps, low, high, color=c, alpha=0.18, lw=0)
            ax.plot(steps, mean, color=c, ls=LOSS_STYLES[all_ranks.index(rank) % len(LOSS_STYLES)], lw=1.2,
                    gid=f"{method} r{rank}")
            methods.add(method)
            seeds.add(len(runs))
            for t in sorted({switch_step(r) for r in runs} - {None}):
                ax.axvline(t, color=c, ls=":", lw=1.2, gid=f"switch {method}")
                switched = True
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss (nats)" + (f", {window}-step mean" if window > 1 else ""))
        ax.set_title(f"{key[0]} on {key[1]}", fontsize=10)
        ax.grid(alpha=0.3)
    styles = [Line2D([], [], color="k", ls=LOSS_STYLES[i % len(LOSS_STYLES)], label=f"rank {r}")
              for i, r in enumerate(all_ranks)]
    handles = method_handles(methods) + styles + \
        ([Line2D([], [], color="k", ls=":", lw=1.2, label="LoRA-Dash switch")] if switched else [])
    legend_below(fig, handles)
    n = "/".join(map(str, sorted(seeds)))
    fig.suptitle(f"Training loss: mean over {n} seed(s), band = min–max over seeds", fontsize=12)
    return fig
