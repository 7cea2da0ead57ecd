"""The paper's numbers beside ours. `reference/commonsense.csv` holds the published commonsense
table (model hub id, method, rank, task, protocol, metric, value in %, source); where a grid's
cells match reference cells, the leaderboard adds a table: paper, ours (mean ± std over seeds),
gap, and whether the paper's value lies within our seed spread (mean ± 2 std) and within our 95% CI."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

REFERENCE = Path(__file__).resolve().parent / "reference" / "commonsense.csv"
KEYS = ["model", "method", "rank", "task", "protocol", "metric"]


def load_reference(path: str | Path = REFERENCE) -> pd.DataFrame:
    ref = pd.read_csv(path, dtype={"rank": str})
    return ref.rename(columns={"value": "paper"})


def within_spread(gap: float, std: float, seeds: int) -> str:
    """'yes' when |ours - paper| <= 2 std over seeds; needs two seeds or more to say."""
    if seeds < 2 or pd.isna(std):
        return "n/a (1 seed)"
    return "yes" if abs(gap) <= 2 * std else "no"


def table(summary: pd.DataFrame, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows where our summary (aggregate.summarise) has a reference cell; empty when none."""
    reference = load_reference() if reference is None else reference
    summary = summary if "ci_low" in summary else summary.assign(ci_low=float("nan"), ci_high=float("nan"))
    ours = summary.assign(rank=summary["rank"].astype(str))[KEYS + ["seeds", "mean", "std", "ci_low", "ci_high"]]
    both = reference.merge(ours, on=KEYS, how="inner")
    if both.empty:
        return both
    both["gap"] = both["mean"] - both["paper"]
    both["within_seed_spread"] = [within_spread(g, s, n) for g, s, n in zip(both["gap"], both["std"], both["seeds"])]
    both["within_ci"] = ["n/a" if pd.isna(lo) else ("yes" if lo <= p <= hi else "no")
                         for p, lo, hi in zip(both["paper"], both["ci_low"], both["ci_high"])]
    return both[["model_label", "model", "method", "rank", "task", "protocol", "metric", "paper", "mean", "std",
                 "ci_low", "ci_high", "seeds", "gap", "within_seed_spread", "within_ci", "source"]].reset_index(drop=True)


def blocks(rows: pd.DataFrame, setting: str = "") -> list[tuple[str, object]]:
    """The reproduction section as (kind, content) blocks (aggregate.tables renders them);
    `setting` says which training setting its numbers come from (a sweep grid has two)."""
    if rows.empty:
        return []
    shown = pd.DataFrame({
        "model": rows["model_label"], "method": rows["method"], "rank": rows["rank"], "task": rows["task"],
        "paper": rows["paper"].map("{:.1f}".format),
        "ours": [f"{m:.2f}" if pd.isna(s) else f"{m:.2f} ± {s:.2f}" for m, s in zip(rows["mean"], rows["std"])],
        "seeds": rows["seeds"], "gap": rows["gap"].map("{:+.2f}".format),
        "within seed spread": rows["within_seed_spread"], "within our 95% CI": rows["within_ci"]})
    sources = "; ".join(sorted(rows["source"].unique()))
    return [("h2", "Reproduction: the paper's numbers beside ours"),
            ("p", f"Commonsense, generative protocol, accuracy in %. Gap = ours - paper; 'within seed spread' when "
             f"|gap| <= 2 std over our seeds; 'within our 95% CI' when the paper's value lies in the cell's CI. Sources: {sources}."
             + (f" Our numbers: {setting}" if setting else "")),
            ("table", shown)]
