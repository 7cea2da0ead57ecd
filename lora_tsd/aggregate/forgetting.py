"""The forgetting records (evaluation/forgetting.py) in the tables: a value per trained
causal-LM cell, its mean ± std over seeds and train sets per cost-table row, and the note that
says what was measured. Encoder families (GLUE) have none: not applicable, never zero."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..data.tasks import FAMILIES

CELL = ["model", "train_set", "method", "rank", "seed"]
NOT_APPLICABLE = "n/a"
COLUMN = "forgetting (nats/token)"


def applies(family: str) -> bool:
    return FAMILIES[family].model_kind == "causal"


def load(files: list[str | Path]) -> tuple[pd.DataFrame, list[dict]]:
    """(one row per trained cell: its keys, family, ce, base_ce and forgetting; the base
    models' records, without their per-row arrays)."""
    cells, bases = [], []
    for path in files:
        rec = json.loads(Path(path).read_text())
        if rec.get("method", "base") == "base":
            bases.append({k: v for k, v in rec.items() if k not in ("rows", "packages")})
            continue
        cells.append({**{k: rec.get(k) for k in CELL}, "family": rec.get("family"),
                      **({"setting": rec["setting"]} if rec.get("setting") else {}),
                      "ce": rec.get("ce"), "base_ce": rec.get("base_ce"), "forgetting": rec.get("forgetting")})
    df = pd.DataFrame(cells, columns=CELL + ["family", "ce", "base_ce", "forgetting"]
                      + (["setting"] if any("setting" in c for c in cells) else []))
    for key in ("rank", "seed"):
        df[key] = df[key].astype("Int64")
    df["forgetting"] = df["forgetting"].astype(float)
    return df, bases


def attach(df: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """The long records with each cell's forgetting as a column (NaN for base rows, encoder
    cells and cells without a record)."""
    keys = CELL + (["setting"] if "setting" in df.columns and "setting" in cells.columns else [])
    return df.merge(cells[keys + ["forgetting"]].drop_duplicates(keys), on=keys, how="left")


def per_row(df: pd.DataFrame) -> pd.DataFrame:
    """Forgetting per (family, model, method, rank): mean and std over the row's cells (seeds
    and train sets), each cell counted once whatever its number of tasks and metrics; rank as
    the summary writes it (a string)."""
    cells = df[df.method != "base"].drop_duplicates(["family"] + CELL)
    cells = cells.assign(rank=cells["rank"].astype("string").fillna("-"))
    return cells.groupby(["family", "model", "method", "rank"], sort=False).agg(
        forgetting=("forgetting", "mean"), forgetting_std=("forgetting", "std"),
        forgetting_cells=("forgetting", "count")).reset_index()


def cell_text(family: str, mean, std) -> str:
    if not applies(family):
        return NOT_APPLICABLE
    if pd.isna(mean):
        return "-"
    return f"{mean:+.4f}" if pd.isna(std) else f"{mean:+.4f} ± {std:.4f}"


def note(family: str, bases: list[dict]) -> str:
    """What the column measures, on which text and tokens, and the base model's CE."""
    if not applies(family):
        return (f"Forgetting: {NOT_APPLICABLE} for {family} — its encoder cells have no language-model head to score "
                f"general text with (not applicable, not zero).")
    if not bases:
        return "Forgetting: no base-model record, so no cell has a value."
    sample = bases[0].get("sample") or {}
    scored = "; ".join(f"{b['model']}: {b.get('tokens')} tokens, base CE {b['ce']:.4f}" for b in bases
                       if b.get("ce") is not None)
    return (f"Forgetting: the cell's mean token cross-entropy minus the untuned base model's, in nats per token, on "
            f"a general-text sample no task trains on: {sample.get('how', '?')}; its first {sample.get('rows', '?')} "
            f"rows, each cut to {bases[0].get('max_length')} tokens, every token after a row's first scored "
            f"({scored}; scored in {bases[0].get('dtype')}). Positive: the cell fits general text worse than the "
            f"base model. Mean ± std over seeds and train sets.")
