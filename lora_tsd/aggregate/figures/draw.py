"""Every figure of a task family, as PNGs with fixed names (a workflow rule declares them as
outputs): score against cost (pareto), against rank (rank), per task (bars), training losses
(loss_curves), and what the task-specific-direction methods selected (tsd_profile,
tsd_overlap). Every figure is always written; one with nothing to draw says what is missing.

Figures are built on matplotlib.figure.Figure directly (no pyplot): no global state, no GUI
backend, nothing left open between figures."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ... import atomic
from .style import DPI
from .comparison import bars_figure, pareto_figure, rank_figure
from .curves import loss_figure
from .directions import overlap_figure, profile_figure


FILES = {"pareto": "pareto.png", "rank": "rank.png", "bars": "bars.png", "loss_curves": "loss_curves.png",
         "tsd_profile": "tsd_profile.png", "tsd_overlap": "tsd_overlap.png"}


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
