"""Score figures from the leaderboard's summary: score against trainable parameters (pareto),
against rank (rank), and per task with CIs (bars)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import ScaledTranslation

from .style import (DistinctFormatter, colour, count_label, count_unit, grid, legend_below, log_ticks,
                    method_handles, method_order, panel_title, percent_label, percent_unit, placeholder,
                    rank_handles, rank_hatch, rank_key, rank_marker)

# Below this ratio of the largest to the smallest parameter count a log axis adds nothing (its
# ticks are linear ones anyway): the pareto figure draws a linear axis instead.
LOG_AXIS_RATIO = 2.0


def primary_metric(rows: pd.DataFrame) -> str:
    """A (family, protocol) table's primary metric: the first one its rows list (the tables'
    metric order puts acc, prompt_level_strict_acc, accuracy first)."""
    return rows["metric"].iloc[0]


def headline(summary: pd.DataFrame) -> pd.DataFrame:
    """One score per (family, protocol, model, method, rank) in the primary metric: the task
    'avg' row when the (family, protocol, model) has one, else each task's row (a single task
    is its own headline; several without an average are drawn per task). Methods without an
    average where others have one are left out: they are not averaged over what exists."""
    if summary.empty:
        return summary
    parts = []
    for _, part in summary.groupby(["family", "protocol"], sort=False):
        part = part[part["metric"] == primary_metric(part)]
        for _, rows in part.groupby("model", sort=False):
            parts.append(rows[rows["task"] == "avg"] if (rows["task"] == "avg").any() else rows)
    if not parts:
        return summary.iloc[0:0]
    out = pd.concat(parts)
    return out[out["mean"].notna()].reset_index(drop=True)


def pareto_front(params, scores) -> list[int]:
    """Indices (ascending params) of the points no other point beats: none has fewer or equal
    parameters and a higher or equal score (one of them strictly)."""
    params, scores = np.asarray(params, float), np.asarray(scores, float)
    order = sorted(range(len(params)), key=lambda i: (params[i], -scores[i]))
    front, best = [], -np.inf
    for i in order:
        if scores[i] > best:
            front.append(i)
            best = scores[i]
    return front


def error_bars(rows: pd.DataFrame) -> tuple[np.ndarray, str]:
    """(2, n) distances below/above each mean: the 95% CI where the row has one, else ± std
    over seeds (0 when neither), and what they are, for the axis note."""
    mean = rows["mean"].to_numpy(float)
    lo = rows["ci_low"].to_numpy(float) if "ci_low" in rows else np.full(len(rows), np.nan)
    hi = rows["ci_high"].to_numpy(float) if "ci_high" in rows else np.full(len(rows), np.nan)
    has_ci = ~(np.isnan(lo) | np.isnan(hi))
    std = np.nan_to_num(rows["std"].to_numpy(float))
    below = np.where(has_ci, mean - lo, std)
    above = np.where(has_ci, hi - mean, std)
    label = "95% CI" if has_ci.all() else "± std over seeds" if not has_ci.any() else "95% CI (± std where no CI)"
    return np.maximum(np.vstack([below, above]), 0), label


def panels(heads: pd.DataFrame) -> list[tuple]:
    """(family, protocol, model, task) keys of the headline's panels, in table order."""
    return list(dict.fromkeys(zip(heads["family"], heads["protocol"], heads["model"], heads["task"])))


def trained_panels(heads: pd.DataFrame) -> list[tuple]:
    """The panels with at least one trained method (a base-only panel has nothing to compare)."""
    return [] if heads.empty else [k for k in panels(heads) if (rows_of(heads, k)["method"] != "base").any()]


def rows_of(heads: pd.DataFrame, key: tuple) -> pd.DataFrame:
    f, p, m, t = key
    return heads[(heads["family"] == f) & (heads["protocol"] == p) & (heads["model"] == m) & (heads["task"] == t)]


def draw_base(ax, rows: pd.DataFrame) -> bool:
    base = rows[rows["method"] == "base"]
    if base.empty:
        return False
    ax.axhline(base["mean"].iloc[0], color=colour("base"), ls="--", lw=1.2)
    return True


def base_handle() -> Line2D:
    return Line2D([], [], color=colour("base"), ls="--", label="base (untuned)")


def pareto_figure(summary: pd.DataFrame) -> Figure:
    """Headline score against trainable parameters, the Pareto front as a step line."""
    heads = headline(summary)
    if not heads.empty:  # a method without a parameter count has no place on a log axis
        heads = heads[(heads["method"] == "base") | (heads["trainable_params"].fillna(0) > 0)]
    keys = trained_panels(heads)
    if not keys:
        return placeholder("Score against trainable parameters", "no trained cell with a score in this grid")
    fig, axes = grid(len(keys))
    bar_labels, based = set(), False
    all_ranks = sorted(heads.loc[heads["method"] != "base", "rank"].unique(), key=rank_key)
    for ax, key in zip(axes, keys):
        rows = rows_of(heads, key)
        trained = rows[rows["method"] != "base"]
        bars, label = error_bars(trained)
        bar_labels.add(label)
        order = method_order(trained["method"])
        for i, r in enumerate(trained.itertuples()):
            # Methods of one rank share a parameter count: each is nudged sideways by a few
            # points on screen (the plotted data stays exact) so none hides another.
            nudge = ScaledTranslation(4.5 * (order.index(r.method) - (len(order) - 1) / 2) / 72, 0,
                                      fig.dpi_scale_trans)
            bar = ax.errorbar([r.trainable_params], [r.mean], yerr=bars[:, i:i + 1], fmt=rank_marker(r.rank, all_ranks),
                              ms=6, color=colour(r.method), ecolor=colour(r.method), elinewidth=1, capsize=2,
                              transform=ax.transData + nudge)
            bar.lines[0].set_gid(f"{r.method} r{r.rank}")  # tests (and readers) find a point by name
        params, scores = trained["trainable_params"].to_numpy(float), trained["mean"].to_numpy(float)
        front = pareto_front(params, scores)
        # Max score for <= params: steps at each front point, flat out to the largest cell.
        xs = np.append(params[front], params.max())
        ys = np.append(scores[front], scores[front][-1])
        ax.step(xs, ys, where="post", color="k", lw=1, alpha=0.6, zorder=0, gid="pareto front")
        # Autoscaling skips the nudged error bars: their extent is added by hand.
        ax.update_datalim(np.column_stack([np.r_[params, params], np.r_[scores - bars[0], scores + bars[1]]]))
        ax.autoscale_view()
        based |= draw_base(ax, rows)
        # Counts a factor of 2 apart or closer (every method at one rank: 1.658M to 1.662M)
        # get a linear axis whose labels have the decimals that tell the ticks apart.
        logged = params.max() / params.min() >= LOG_AXIS_RATIO
        span = np.log10(params.max() / params.min())
        if logged:
            ax.set_xscale("log")
            log_ticks(ax.xaxis, count_label, span, count_unit)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(nbins=4))  # room for labels of 6 or 7 digits
            ax.xaxis.set_major_formatter(DistinctFormatter(count_label, count_unit))
        ax.margins(x=0.12)  # room for the nudged markers
        ax.set_xlabel("trainable parameters" + (" (log scale)" if logged else ""))
        ax.set_ylabel(f"{rows['metric'].iloc[0]} (%)")
        ax.set_title(panel_title(*key), fontsize=10)
        ax.grid(alpha=0.3, which="both")
        base_params = rows["base_params"].dropna() if "base_params" in rows else pd.Series(dtype=float)
        if not base_params.empty and base_params.iloc[0] > 0:
            total = float(base_params.iloc[0])
            top = ax.secondary_xaxis("top", functions=(lambda x, t=total: 100 * x / t, lambda p, t=total: p * t / 100))
            if logged:
                log_ticks(top.xaxis, percent_label, span, percent_unit)
            else:
                top.xaxis.set_major_locator(MaxNLocator(nbins=4))
                top.xaxis.set_major_formatter(DistinctFormatter(percent_label, percent_unit))
            top.set_xlabel(f"% of the base model's {count_label(total)} parameters", fontsize=9)
    handles = method_handles(heads.loc[heads["method"] != "base", "method"]) + rank_handles(all_ranks) + \
        [Line2D([], [], color="k", alpha=0.6, label="Pareto front")] + ([base_handle()] if based else [])
    legend_below(fig, handles)
    fig.suptitle(f"Headline score against trainable parameters (error bars: {' / '.join(sorted(bar_labels))})",
                 fontsize=12)
    return fig


def rank_figure(summary: pd.DataFrame) -> Figure:
    """Headline score against the adapter rank, a line per method."""
    heads = headline(summary)
    keys = trained_panels(heads)
    if not keys:
        return placeholder("Score against rank", "no trained cell with a score in this grid")
    fig, axes = grid(len(keys))
    bar_labels, based, rankless = set(), False, False
    for ax, key in zip(axes, keys):
        rows = rows_of(heads, key)
        ranked = rows[rows["rank"].map(rank_key) > 0]
        for method in method_order(rows.loc[rows["method"] != "base", "method"]):
            part = rows[rows["method"] == method]
            part = part.iloc[np.argsort(part["rank"].map(rank_key).to_numpy(), kind="stable")]
            if (part["rank"].map(rank_key) > 0).any():
                part = part[part["rank"].map(rank_key) > 0]
                bars, label = error_bars(part)
                bar_labels.add(label)
                bar = ax.errorbar(part["rank"].map(rank_key), part["mean"], yerr=bars, fmt="-o", ms=5,
                                  color=colour(method), elinewidth=1, capsize=3)
                bar.lines[0].set_gid(method)
            else:  # no rank (full fine-tuning): a level to compare with
                ax.axhline(part["mean"].iloc[0], color=colour(method), ls=":", lw=1.5)
                rankless = True
        based |= draw_base(ax, rows)
        ranks = sorted(ranked["rank"].map(rank_key).unique())
        if ranks:
            ax.set_xscale("log", base=2)
            ax.set_xticks(ranks, [f"{int(r)}" for r in ranks])
            ax.minorticks_off()
            pad = 2 ** 0.3
            ax.set_xlim(min(ranks) / pad, max(ranks) * pad)
        ax.set_xlabel("adapter rank r (log scale)")
        ax.set_ylabel(f"{rows['metric'].iloc[0]} (%)")
        ax.set_title(panel_title(*key), fontsize=10)
        ax.grid(alpha=0.3)
    handles = method_handles(heads.loc[heads["method"] != "base", "method"]) + ([base_handle()] if based else []) + \
        ([Line2D([], [], color="k", ls=":", label="no rank (level)")] if rankless else [])
    legend_below(fig, handles)
    fig.suptitle(f"Headline score against rank (error bars: {' / '.join(sorted(bar_labels)) or 'none'})", fontsize=12)
    return fig


def bars_figure(summary: pd.DataFrame) -> Figure:
    """Per (family, protocol, model): every task (and the average) in the primary metric, a bar
    per (method, rank)."""
    groups = []
    for (family, protocol), part in (summary.groupby(["family", "protocol"], sort=False) if not summary.empty else []):
        part = part[(part["metric"] == primary_metric(part)) & part["mean"].notna()]
        for model, rows in part.groupby("model", sort=False):
            groups.append(((family, protocol, model), rows))
    if not groups:
        return placeholder("Scores per task", "no score in this grid")
    widest = max(rows["task"].nunique() * len(rows.groupby(["method", "rank"])) for _, rows in groups)
    fig, axes = grid(len(groups), panel=(min(22.0, max(7.0, 0.22 * widest + 2.5)), 3.8), ncols=1)
    bar_labels, methods = set(), set()
    all_ranks = sorted(summary["rank"].unique(), key=rank_key)
    for ax, ((family, protocol, model), rows) in zip(axes, groups):
        tasks = [t for t in dict.fromkeys(rows["task"]) if t != "avg"]
        tasks += ["avg"] if (rows["task"] == "avg").any() else []  # the average last, as in the tables
        combos = sorted(dict.fromkeys(zip(rows["method"], rows["rank"])),
                        key=lambda mr: (method_order(rows["method"]).index(mr[0]), rank_key(mr[1])))
        width = 0.8 / len(combos)
        for j, (method, rank) in enumerate(combos):
            part = rows[(rows["method"] == method) & (rows["rank"] == rank)].set_index("task")
            part = part.reindex([t for t in tasks if t in part.index])
            bars, label = error_bars(part)
            bar_labels.add(label)
            methods.add(method)
            x = np.array([tasks.index(t) for t in part.index]) - 0.4 + width * (j + 0.5)
            ax.bar(x, part["mean"], width, yerr=bars, color=colour(method), edgecolor="k", linewidth=0.4,
                   hatch=rank_hatch(rank, all_ranks), capsize=2, error_kw={"elinewidth": 0.8},
                   label=f"{method} r{rank}")
        ax.set_xticks(range(len(tasks)), tasks)
        low = (rows["mean"] - error_bars(rows)[0][0]).min()
        ax.set_ylim(max(0.0, 5 * np.floor(low / 5) - 5), None)  # differences of a few points stay visible
        ax.set_ylabel(f"{rows['metric'].iloc[0]} (%)")
        ax.set_title(f"{model} — {family} / {protocol}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    legend_below(fig, method_handles(methods) + rank_handles(all_ranks, markers=False))
    fig.suptitle(f"Scores per task (error bars: {' / '.join(sorted(bar_labels))}; y axis does not start at 0)",
                 fontsize=12)
    return fig
