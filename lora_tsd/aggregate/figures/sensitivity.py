"""A sweep's sensitivity figure: every candidate's score on validation rows (what selection saw)
beside its test score, against the swept value, with the selected and the shared setting marked."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .style import (LOSS_STYLES, colour, legend_below, method_handles, method_order, placeholder, rank_handles,
                    rank_key, rank_marker)

# sensitivity.csv's columns that are not a swept train key.
KNOWN = {"model", "family", "method", "rank", "setting", "metric", "mean", "std", "ci_low", "ci_high", "seeds",
         "split", "selected", "shared", "status"}
SPLITS = ("validation", "test")


def swept_keys(rows: pd.DataFrame) -> list[str]:
    return [c for c in rows.columns if c not in KNOWN]


def varying_keys(rows: pd.DataFrame) -> list[str]:
    """The swept keys with more than one value among the rows (the others are fixed)."""
    return sorted(k for k in swept_keys(rows) if rows[k].dropna().astype(str).nunique() > 1)


def value_label(v: float) -> str:
    """A tick's value as written in a config: 1e-04, 5e-04, 0.05, 16 (the shortest exact form)."""
    if v == 0 or 1e-2 <= abs(v) < 1e4:
        return f"{v:g}"
    for p in range(4):
        if np.isclose(float(f"{v:.{p}e}"), v, rtol=1e-9, atol=0):
            return f"{v:.{p}e}"
    return f"{v:.3e}"


def numeric(values: pd.Series) -> pd.Series | None:
    """The values as floats, or None where one is not a number (booleans count as categories)."""
    if values.dtype == bool or values.map(lambda v: isinstance(v, bool)).any():
        return None
    out = pd.to_numeric(values, errors="coerce")
    return None if out.isna().any() else out.astype(float)


def setting_order(rows: pd.DataFrame) -> list[str]:
    """Setting labels sorted by their swept values (numbers before text), so categories read in order."""
    def key(label):
        row = rows[rows["setting"] == label].iloc[0]
        return [sort_value(row[k]) for k in swept_keys(rows)] + [label]
    return sorted(rows["setting"].unique(), key=key)


def sort_value(v) -> tuple:
    if isinstance(v, (bool, np.bool_)) or not pd.api.types.is_number(v) or pd.isna(v):
        return (1, 0.0, str(v))
    return (0, float(v), "")


def x_axis(rows: pd.DataFrame) -> tuple[str, pd.Series, list, list[str], bool]:
    """(what x is, x per row, tick positions, tick labels, log scale): the swept value when only
    one key varies and it is a number, else each setting as a category."""
    keys = varying_keys(rows)
    xs = numeric(rows[keys[0]]) if len(keys) == 1 else None
    if xs is not None:
        ticks = sorted(xs.unique())
        positive = min(ticks) > 0
        log = positive and (keys[0] == "lr" or max(ticks) / min(ticks) > 5)
        return keys[0], xs, ticks, [value_label(v) for v in ticks], log
    order = setting_order(rows)
    what = f"setting ({', '.join(keys)})" if keys else "setting"
    return what, rows["setting"].map(order.index).astype(float), list(range(len(order))), order, False


def flag(rows: pd.DataFrame, column: str) -> pd.Series:
    """A bool column that may hold NaN (a candidate selection.json does not list): NaN is False."""
    return rows[column].eq(True) if column in rows else pd.Series(False, index=rows.index)


def line_label(method, rank, model, several_ranks: bool, several_models: bool) -> str:
    return method + (f" r{rank}" if several_ranks else "") + (f" ({model})" if several_models else "")


def draw_line(ax, part: pd.DataFrame, xs: pd.Series, label: str, style: dict) -> None:
    """One (method, rank, model) on one split: the line (broken where a candidate has no score),
    CIs where they exist, and the marks."""
    part = part.assign(x=xs.loc[part.index]).sort_values("x")
    ax.plot(part["x"], part["mean"], gid=label, label=label, lw=1.4, ms=5, **style)
    part = part[part["mean"].notna()]
    ci = part[part["ci_low"].notna() & part["ci_high"].notna()]
    if not ci.empty:
        bars = np.maximum(np.vstack([ci["mean"] - ci["ci_low"], ci["ci_high"] - ci["mean"]]), 0)
        ax.errorbar(ci["x"], ci["mean"], yerr=bars, fmt="none", ecolor=style["color"], elinewidth=1, capsize=2,
                    alpha=0.7)
    for _, r in part[flag(part, "selected")].iterrows():
        ax.plot([r["x"]], [r["mean"]], marker=style["marker"], ms=10, ls="", color=style["color"], zorder=3,
                gid=f"selected {label}")
    for _, r in part[flag(part, "shared")].iterrows():
        ax.plot([r["x"]], [r["mean"]], marker="o", ms=15, ls="", mfc="none", mec=style["color"], mew=1.5, zorder=3,
                gid=f"shared {label}")


def format_x(ax, what: str, ticks: list, labels: list[str], log: bool) -> None:
    if log:
        ax.set_xscale("log")
        pad = (max(ticks) / min(ticks)) ** 0.08 if max(ticks) > min(ticks) else 1.5
        ax.set_xlim(min(ticks) / pad, max(ticks) * pad)
    else:
        ax.margins(x=0.08)
    categorical = what.startswith("setting")
    ax.set_xticks(ticks, labels, rotation=40 if categorical else 0, ha="right" if categorical else "center",
                  rotation_mode="anchor", fontsize=8 if categorical else 9)
    ax.minorticks_off()
    ax.set_xlabel(what + (" (log scale)" if log else ""))
    ax.grid(alpha=0.3)


def legend(fig: Figure, rows: pd.DataFrame, ranks: list, models: list) -> None:
    handles = method_handles(rows["method"])
    handles += rank_handles(ranks) if len(ranks) > 1 else []
    handles += [Line2D([], [], color="k", ls=LOSS_STYLES[i % len(LOSS_STYLES)], label=m)
                for i, m in enumerate(models)] if len(models) > 1 else []
    handles += [Line2D([], [], marker="o", ms=9, ls="", color="k", label="selected (on validation)"),
                Line2D([], [], marker="o", ms=11, ls="", mfc="none", mec="k", mew=1.5, label="shared setting")]
    legend_below(fig, handles, title="error bars: 95% CI (none where the CI is missing)")


def sensitivity_figure(rows: pd.DataFrame, family: str) -> Figure:
    """Score against the swept setting, validation (left) beside test (right), a line per
    (method, rank, model): how much the choice matters and whether validation's pick holds on test."""
    rows = rows[(rows["family"] == family) & rows["split"].isin(SPLITS)] if not rows.empty else rows
    scored = rows[rows["mean"].notna()] if not rows.empty else rows
    if scored.empty:
        what = "no candidate of this family in the sweep" if rows.empty else "no candidate with a score"
        return placeholder(f"{family}: sensitivity to the swept setting", what)
    metric = scored["metric"].iloc[0]
    # Unscored candidates stay: they hold their place on the x axis and break their line.
    rows, scored = rows[rows["metric"] == metric], scored[scored["metric"] == metric]
    what, xs, ticks, labels, log = x_axis(rows)
    ranks = sorted(scored["rank"].unique(), key=rank_key)
    models = list(dict.fromkeys(scored["model"]))
    order = method_order(scored["method"])
    fig = Figure(figsize=(10, 4.6), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, split in zip(axes, SPLITS):
        part = rows[rows["split"] == split]
        lines = [g for g in part.groupby(["method", "rank", "model"], sort=False) if g[1]["mean"].notna().any()]
        for (method, rank, model), line in sorted(lines, key=lambda g: (order.index(g[0][0]), rank_key(g[0][1]),
                                                                          models.index(g[0][2]))):
            style = {"color": colour(method), "marker": rank_marker(rank, ranks),
                     "ls": LOSS_STYLES[models.index(model) % len(LOSS_STYLES)]}
            draw_line(ax, line, xs, line_label(method, rank, model, len(ranks) > 1, len(models) > 1), style)
        if not lines:
            ax.text(0.5, 0.5, f"no {split} scores", ha="center", va="center", transform=ax.transAxes)
        format_x(ax, what, ticks, labels, log)
        ax.set_title(split, fontsize=11)
    axes[0].set_ylabel(f"{metric} (%)")
    unscored = len(rows.loc[rows["mean"].isna(), ["model", "method", "rank", "setting"]].drop_duplicates())
    fig.suptitle(f"{family}: score against {what} (metric: {metric})"
                 + (f"\n{unscored} candidate(s) without a score (missing or diverged) not drawn" if unscored else ""),
                 fontsize=11)
    legend(fig, scored, ranks, models)
    return fig
