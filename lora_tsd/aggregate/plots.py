"""The figures a grid's leaderboard gets, as PNGs with fixed names (a workflow rule declares
them as outputs): score against cost (pareto), against rank (rank), per task (bars), training
losses (loss_curves), and what the task-specific-direction methods selected (tsd_profile,
tsd_overlap). Every figure is always written; one with nothing to draw says what is missing.

Figures are built on matplotlib.figure.Figure directly (no pyplot): no global state, no GUI
backend, nothing left open between figures."""
from __future__ import annotations

import zlib
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from matplotlib.transforms import ScaledTranslation

from .. import atomic

DPI = 110
FILES = {"pareto": "pareto.png", "rank": "rank.png", "bars": "bars.png", "loss_curves": "loss_curves.png",
         "tsd_profile": "tsd_profile.png", "tsd_overlap": "tsd_overlap.png"}
DASHING = ("lora_dash", "lora_tsd")  # methods with a switch to a dash phase
PHASES = ("init", "switch")  # selections recorded during training (LoRA-Init's, LoRA-Dash's)
# Fixed colours so a method looks the same in every figure; unknown methods get a stable one.
COLOURS = {"base": "#7f7f7f", "full": "#000000", "lora": "#1f77b4", "rslora": "#aec7e8", "dora": "#9467bd",
           "pissa": "#8c564b", "olora": "#bcbd22", "milora": "#17becf", "vera": "#e377c2", "eva": "#c49c94",
           "lora_init": "#2ca02c", "lora_dash": "#ff7f0e", "lora_tsd": "#d62728"}
ORDER = list(COLOURS)
SPARE = ["#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#5254a3", "#6b6ecf", "#b5cf6b", "#e7ba52"]
RANK_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
MARKS = (("init", "s", "#2ca02c"), ("switch", "v", "k"), ("end", "o", "#d62728"))  # selection markers
LOSS_STYLES = ["-", "--", "-.", (0, (6, 2, 1, 2, 1, 2))]  # ":" marks the switch
RANK_HATCHES = ["", "//", "..", "xx", "\\\\", "++", "oo", "--"]


# ---------------------------------------------------------------- helpers (pure, tested)

def colour(method: str) -> str:
    return COLOURS.get(method) or SPARE[zlib.crc32(method.encode()) % len(SPARE)]


def method_order(methods) -> list[str]:
    """Base first, then the known methods in a fixed order (TSD methods last), then others."""
    seen = list(dict.fromkeys(methods))
    return sorted(seen, key=lambda m: (ORDER.index(m) if m in ORDER else len(ORDER), m))


def rank_key(rank) -> float:
    """'-' (no rank: base, full fine-tuning) before numeric ranks."""
    try:
        return float(rank)
    except (TypeError, ValueError):
        return -1.0


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
    kind = "95% CI" if has_ci.all() else "± std over seeds" if not has_ci.any() else "95% CI (± std where no CI)"
    return np.maximum(np.vstack([below, above]), 0), kind


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
    >= 1, a fraction of the run's planned steps below 1); None for methods without one."""
    if record.get("method") not in DASHING:
        return None
    if record.get("switch_step") is not None:
        return int(record["switch_step"])
    t = (record.get("tsd_config") or {}).get("dash_t")
    if t is None:
        return None
    if t >= 1:
        return int(t)
    steps = record.get("planned_steps") or (record.get("train_config") or {}).get("steps") or len(record["losses"])
    return int(round(t * steps))


def smooth(values, window: int) -> np.ndarray:
    """Trailing moving average (the first window-1 steps have none)."""
    values = np.asarray(values, float)
    if window <= 1 or len(values) < window:
        return values
    return np.convolve(values, np.ones(window) / window, mode="valid")


# ---------------------------------------------------------------- figure scaffolding

def grid(n: int, panel=(5.0, 3.6), ncols: int = 3, extra_h: float = 1.0) -> tuple[Figure, list]:
    """A figure with n panels in rows of up to ncols, room below for a shared legend."""
    ncols = max(1, min(n, ncols))
    nrows = -(-n // ncols)
    # At least 9 inches wide: a one-panel figure must still hold its title and legend.
    fig = Figure(figsize=(max(9.0, panel[0] * ncols), panel[1] * nrows + extra_h), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def placeholder(title: str, message: str) -> Figure:
    fig = Figure(figsize=(7, 3.2), layout="constrained")
    ax = fig.subplots()
    ax.set_axis_off()
    ax.set_title(title, fontsize=12)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, wrap=True, transform=ax.transAxes)
    return fig


def legend_below(fig: Figure, handles: list, title: str | None = None) -> None:
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize=9,
                   title=title, title_fontsize=9, frameon=False)


def method_handles(methods) -> list:
    return [Patch(facecolor=colour(m), label=m) for m in method_order(methods)]


def rank_marker(rank, ranks) -> str:
    return RANK_MARKERS[list(ranks).index(rank) % len(RANK_MARKERS)]


def rank_hatch(rank, ranks) -> str:
    return RANK_HATCHES[list(ranks).index(rank) % len(RANK_HATCHES)]


def rank_handles(ranks, markers: bool = True) -> list:
    """Legend entries for the ranks (markers or hatches); '-' (base, full) has no entry."""
    ranks = sorted(set(ranks), key=rank_key)
    if markers:
        return [Line2D([], [], marker=rank_marker(r, ranks), color="k", ls="", label=f"rank {r}")
                for r in ranks if r != "-"]
    return [Patch(facecolor="white", edgecolor="k", hatch=rank_hatch(r, ranks), label=f"rank {r}")
            for r in ranks if r != "-"]


def log_ticks(axis, label, decades: float) -> None:
    """Labelled log ticks, denser when the data spans less than a few decades, so a narrow
    range (ranks 8 and 16: a factor 2) still gets several."""
    subs = np.arange(1.0, 10.0) if decades < 0.5 else (1.0, 2.0, 3.0, 5.0, 7.0) if decades < 2 \
        else (1.0, 2.0, 5.0) if decades < 4 else (1.0,)
    axis.set_major_locator(LogLocator(subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: label(v)))
    axis.set_minor_formatter(NullFormatter())


def count_label(n: float) -> str:
    """1200 -> 1.2k, 4e6 -> 4M: parameter counts at a glance."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.3g}"


def panel_title(family, protocol, model, task=None) -> str:
    scope = "average over tasks" if task in (None, "avg") else task
    return f"{model}\n{family} / {protocol}: {scope}"


def panels(h: pd.DataFrame) -> list[tuple]:
    """(family, protocol, model, task) keys of the headline's panels, in table order."""
    return list(dict.fromkeys(zip(h["family"], h["protocol"], h["model"], h["task"])))


def trained_panels(h: pd.DataFrame) -> list[tuple]:
    """The panels with at least one trained method (a base-only panel has nothing to compare)."""
    return [] if h.empty else [k for k in panels(h) if (rows_of(h, k)["method"] != "base").any()]


def rows_of(h: pd.DataFrame, key: tuple) -> pd.DataFrame:
    f, p, m, t = key
    return h[(h["family"] == f) & (h["protocol"] == p) & (h["model"] == m) & (h["task"] == t)]


def draw_base(ax, rows: pd.DataFrame) -> bool:
    base = rows[rows["method"] == "base"]
    if base.empty:
        return False
    ax.axhline(base["mean"].iloc[0], color=colour("base"), ls="--", lw=1.2)
    return True


def base_handle() -> Line2D:
    return Line2D([], [], color=colour("base"), ls="--", label="base (untuned)")


# ---------------------------------------------------------------- figures

def pareto_figure(summary: pd.DataFrame) -> Figure:
    """Headline score against trainable parameters, the Pareto front as a step line."""
    h = headline(summary)
    if not h.empty:  # a method without a parameter count has no place on a log axis
        h = h[(h["method"] == "base") | (h["trainable_params"].fillna(0) > 0)]
    keys = trained_panels(h)
    if not keys:
        return placeholder("Score against trainable parameters", "no trained cell with a score in this grid")
    fig, axes = grid(len(keys))
    kinds, based = set(), False
    all_ranks = sorted(h.loc[h["method"] != "base", "rank"].unique(), key=rank_key)
    for ax, key in zip(axes, keys):
        rows = rows_of(h, key)
        trained = rows[rows["method"] != "base"]
        bars, kind = error_bars(trained)
        kinds.add(kind)
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
        ax.set_xscale("log")
        span = np.log10(params.max() / params.min())
        log_ticks(ax.xaxis, count_label, span)
        ax.margins(x=0.12)  # room for the nudged markers
        ax.set_xlabel("trainable parameters (log scale)")
        ax.set_ylabel(f"{rows['metric'].iloc[0]} (%)")
        ax.set_title(panel_title(*key), fontsize=10)
        ax.grid(alpha=0.3, which="both")
        base_params = rows["base_params"].dropna() if "base_params" in rows else pd.Series(dtype=float)
        if not base_params.empty and base_params.iloc[0] > 0:
            total = float(base_params.iloc[0])
            top = ax.secondary_xaxis("top", functions=(lambda x, t=total: 100 * x / t, lambda p, t=total: p * t / 100))
            log_ticks(top.xaxis, lambda v: f"{v:.3g}%", span)
            top.set_xlabel(f"% of the base model's {count_label(total)} parameters", fontsize=9)
    handles = method_handles(h.loc[h["method"] != "base", "method"]) + rank_handles(all_ranks) + \
        [Line2D([], [], color="k", alpha=0.6, label="Pareto front")] + ([base_handle()] if based else [])
    legend_below(fig, handles)
    fig.suptitle(f"Headline score against trainable parameters (error bars: {' / '.join(sorted(kinds))})",
                 fontsize=12)
    return fig


def rank_figure(summary: pd.DataFrame) -> Figure:
    """Headline score against the adapter rank, a line per method."""
    h = headline(summary)
    keys = trained_panels(h)
    if not keys:
        return placeholder("Score against rank", "no trained cell with a score in this grid")
    fig, axes = grid(len(keys))
    kinds, based, rankless = set(), False, False
    for ax, key in zip(axes, keys):
        rows = rows_of(h, key)
        ranked = rows[rows["rank"].map(rank_key) > 0]
        for method in method_order(rows.loc[rows["method"] != "base", "method"]):
            part = rows[rows["method"] == method]
            part = part.iloc[np.argsort(part["rank"].map(rank_key).to_numpy(), kind="stable")]
            if (part["rank"].map(rank_key) > 0).any():
                part = part[part["rank"].map(rank_key) > 0]
                bars, kind = error_bars(part)
                kinds.add(kind)
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
    handles = method_handles(h.loc[h["method"] != "base", "method"]) + ([base_handle()] if based else []) + \
        ([Line2D([], [], color="k", ls=":", label="no rank (level)")] if rankless else [])
    legend_below(fig, handles)
    fig.suptitle(f"Headline score against rank (error bars: {' / '.join(sorted(kinds)) or 'none'})", fontsize=12)
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
    kinds, methods = set(), set()
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
            bars, kind = error_bars(part)
            kinds.add(kind)
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
    fig.suptitle(f"Scores per task (error bars: {' / '.join(sorted(kinds))}; y axis does not start at 0)",
                 fontsize=12)
    return fig


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


def missing_analysis(train_records: list[dict], methods: tuple) -> str:
    """What a TSD figure lacks: the methods, or (when they ran) their analysis files."""
    names = " / ".join({"lora_dash": "LoRA-Dash", "lora_init": "LoRA-Init", "lora_tsd": "LoRA-TSD"}[m]
                       for m in methods)
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


def draw_all(summary: pd.DataFrame, train_records: list[dict], out_dir) -> dict[str, Path]:
    """Write every figure (placeholders where there is nothing to draw); {name: path}."""
    out_dir = Path(out_dir)
    makers = {"pareto": lambda: pareto_figure(summary), "rank": lambda: rank_figure(summary),
              "bars": lambda: bars_figure(summary), "loss_curves": lambda: loss_figure(train_records),
              "tsd_profile": lambda: profile_figure(train_records),
              "tsd_overlap": lambda: overlap_figure(train_records)}
    paths = {}
    for name, make in makers.items():
        paths[name] = out_dir / FILES[name]
        with atomic.file(paths[name]) as tmp:
            make().savefig(tmp, dpi=DPI, bbox_inches="tight")  # nothing clipped at the edges
    return paths
