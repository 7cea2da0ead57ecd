"""Results tables: one row per grid cell plus the untuned base model, and a mean ± std
summary over seeds. Only finished evaluation records are read (they are written atomically
after training and scoring both succeeded)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from . import atomic
from .evaluation import PROTOCOL

CELL = ["model", "task", "method", "rank", "seed"]


def load_records(eval_files: list[str | Path]) -> pd.DataFrame:
    rows = []
    for path in eval_files:
        rec = json.loads(Path(path).read_text())
        train = rec.get("train", {})
        rows.append({
            "model": rec["model"], "task": rec["task"], "method": rec.get("method", "base"),
            "rank": rec.get("rank"), "seed": rec.get("seed"), "n_test": rec.get("n_test"),
            "acc": 100 * rec["metrics"]["acc"], "acc_norm": 100 * rec["metrics"]["acc_norm"],
            "acc_stderr": 100 * rec["metrics"].get("acc_stderr", float("nan")),
            "trainable_params": train.get("trainable_params", 0), "steps": train.get("steps", 0),
            "final_loss": train.get("final_loss"), "train_time_s": train.get("train_time_s"),
            "tokens_per_s": train.get("tokens_per_s"), "commit": train.get("git_commit"),
            "peak_mem_mb": train.get("peak_gpu_mem_mb", train.get("peak_rss_mb")),
        })
    df = pd.DataFrame(rows)
    df["rank"] = df["rank"].astype("Int64")
    df["seed"] = df["seed"].astype("Int64")
    base_first = df["method"].ne("base")
    return df.assign(_b=base_first).sort_values(["model", "task", "_b", "method", "rank", "seed"]).drop(columns="_b")


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds (std with ddof=1; blank for a single seed)."""
    keys = ["model", "task", "method", "rank"]
    g = df.assign(rank=df["rank"].astype("string").fillna("-")).groupby(keys, sort=False)
    out = g.agg(seeds=("seed", "count"), acc_mean=("acc", "mean"), acc_std=("acc", "std"),
                acc_norm_mean=("acc_norm", "mean"), acc_norm_std=("acc_norm", "std"),
                trainable_params=("trainable_params", "first"), train_time_s=("train_time_s", "mean"),
                peak_mem_mb=("peak_mem_mb", "max")).reset_index()
    return out


def _pm(mean, std) -> str:
    return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"


def _display(table: pd.DataFrame, decimals: int) -> pd.DataFrame:
    """Floats rounded to `decimals`, '-' for missing values (the base row has no rank, seed or
    training figures)."""
    out = table.astype(object).copy()
    for col in table.columns:
        if pd.api.types.is_float_dtype(table[col]):
            out[col] = [f"{v:.{decimals}f}" if pd.notna(v) else "-" for v in table[col]]
    return out.where(table.notna(), "-")


def to_markdown(df: pd.DataFrame, summary: pd.DataFrame, stamp: dict) -> str:
    seeds = sorted(int(s) for s in df["seed"].dropna().unique())
    lines = [
        "# Leaderboard", "",
        f"- Evaluation protocol: {PROTOCOL}; accuracies in %.",
        f"- Models: {', '.join(sorted(df['model'].unique()))}; tasks: {', '.join(sorted(df['task'].unique()))}.",
        f"- Data: {stamp['data']}",
        f"- Seeds: {seeds}; 'base' is the untuned model scored on the same held-out examples.",
        f"- Tables written at commit `{stamp['commit']}` from config `{stamp['config_hash']}` "
        f"(the full config is in leaderboard.json); cells trained at commit(s) "
        f"{', '.join(f'`{c}`' for c in stamp.get('cell_commits', [])) or 'n/a'}.",
        "- With one test split per task, differences smaller than a few standard errors "
        "(`acc_stderr`, per cell) are noise.", "",
        "## Mean over seeds", "",
    ]
    view = summary.assign(acc=[_pm(m, s) for m, s in zip(summary.acc_mean, summary.acc_std)],
                          acc_norm=[_pm(m, s) for m, s in zip(summary.acc_norm_mean, summary.acc_norm_std)])
    cols = ["model", "task", "method", "rank", "seeds", "acc", "acc_norm", "trainable_params",
            "train_time_s", "peak_mem_mb"]
    lines += [_display(view[cols], 1).to_markdown(index=False, disable_numparse=True), "", "## Every grid cell", ""]
    cell_cols = CELL + ["n_test", "acc", "acc_norm", "acc_stderr", "final_loss", "steps",
                        "tokens_per_s", "peak_mem_mb"]
    lines += [_display(df[cell_cols], 2).to_markdown(index=False, disable_numparse=True), ""]
    return "\n".join(lines)


def write(eval_files: list[str | Path], config: dict, stamp: dict, out_md: str | Path,
          out_csv: str | Path, out_json: str | Path) -> pd.DataFrame:
    df = load_records(eval_files)
    stamp = {**stamp, "cell_commits": sorted(c for c in df["commit"].dropna().unique())}
    summary = summarise(df)
    atomic.write_text(out_csv, df.to_csv(index=False))
    atomic.write_json(out_json, {"stamp": stamp, "config": config,
                                 "summary": json.loads(summary.to_json(orient="records"))})
    atomic.write_text(out_md, to_markdown(df, summary, stamp))
    return df
