"""What every figure shares: method colours and order, rank markers and hatches, panel grids,
legends, log-axis ticks, titles, the placeholder for a figure with nothing to draw."""
from __future__ import annotations

import zlib

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import Formatter, LogLocator, NullFormatter


DPI = 110

# Fixed colours so a method looks the same in every figure; unknown methods get a stable one.
COLOURS = {"base": "#7f7f7f", "full": "#000000", "lora": "#1f77b4", "rslora": "#aec7e8", "dora": "#9467bd",
           "pissa": "#8c564b", "olora": "#bcbd22", "milora": "#17becf", "vera": "#e377c2", "eva": "#c49c94",
           "lora_init": "#2ca02c", "lora_dash": "#ff7f0e", "lora_tsd": "#d62728",
           # the dash ablations: LoRA-Dash's hue, lighter to darker, random in grey
           "lora_dash_top": "#ffbb78", "lora_dash_bottom": "#a05a00", "lora_dash_random": "#a0a0a0"}

ORDER = list(COLOURS)

SPARE = ["#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#5254a3", "#6b6ecf", "#b5cf6b", "#e7ba52"]

RANK_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]

MARKS = (("init", "s", "#2ca02c"), ("switch", "v", "k"), ("end", "o", "#d62728"))  # selection markers

LOSS_STYLES = ["-", "--", "-.", (0, (6, 2, 1, 2, 1, 2))]  # ":" marks the switch

RANK_HATCHES = ["", "//", "..", "xx", "\\\\", "++", "oo", "--"]


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


def log_ticks(axis, label, decades: float, unit) -> None:
    """Labelled log ticks, denser when the data spans less than a few decades, so a narrow
    range (ranks 8 and 16: a factor 2) still gets several; `label` and `unit` as
    DistinctFormatter's, so no two ticks read the same."""
    subs = np.arange(1.0, 10.0) if decades < 0.5 else (1.0, 2.0, 3.0, 5.0, 7.0) if decades < 2 \
        else (1.0, 2.0, 5.0) if decades < 4 else (1.0,)
    axis.set_major_locator(LogLocator(subs=subs))
    axis.set_major_formatter(DistinctFormatter(label, unit, short=True))
    axis.set_minor_formatter(NullFormatter())


class DistinctFormatter(Formatter):
    """Tick labels that never read the same for two ticks. With `short` (a log axis: ticks
    at 1, 2, 5 x a power of ten), `label(value)` per tick when those labels all differ;
    otherwise (and always on a linear axis) every tick in one unit, `unit(values)` -> (size,
    suffix), with the fewest decimals that write each tick exactly: ticks from 1 657 500 to
    1 662 500 read 1.6575M, 1.6600M, 1.6625M, where "%.3g" gave 1.66M at every tick."""

    def __init__(self, label, unit, short: bool = False):
        self.label, self.unit, self.short = label, unit, short

    def __call__(self, x, pos=None):  # one value alone (a cursor readout): the short form
        return self.label(x)

    def format_ticks(self, values):
        values = list(values)
        if self.short:
            labels = [self.label(v) for v in values]
            if len(set(labels)) == len(labels):
                return labels
        size, suffix = self.unit(values)
        scaled = [v / size for v in values]
        decimals = next((d for d in range(10) if all(abs(x - round(x, d)) <= 1e-9 * max(1.0, abs(x))
                                                     for x in scaled)), 9)
        return [f"{x:.{decimals}f}{suffix}" for x in scaled]


UNITS = ((1e9, "B"), (1e6, "M"), (1e3, "k"))


def count_label(n: float) -> str:
    """1200 -> 1.2k, 4e6 -> 4M: parameter counts at a glance."""
    for size, unit in UNITS:
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.3g}"


def count_unit(values) -> tuple[float, str]:
    """One unit for a whole axis of counts: the largest value's (k, M, B)."""
    top = max((abs(v) for v in values), default=0.0)
    return next(((size, unit) for size, unit in UNITS if top >= size), (1.0, ""))


def percent_label(v: float) -> str:
    return f"{v:.3g}%"


def percent_unit(values) -> tuple[float, str]:
    return 1.0, "%"


def panel_title(family, protocol, model, task=None) -> str:
    scope = "average over tasks" if task in (None, "avg") else task
    return f"{model}\n{family} / {protocol}: {scope}"
