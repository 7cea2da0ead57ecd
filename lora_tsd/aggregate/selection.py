"""A sweep's selection: for each (model, method, rank, task family), the candidate setting with
the best mean validation score over seeds (or the lowest validation loss). It reads validation
records only (val/<task>.json, or train.json's hold-out losses), never a test score."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .. import atomic
from . import items as item_scores
from . import tables
from ..data.tasks import FAMILIES

CANDIDATE = ["model", "family", "method", "rank", "setting"]
RULE = ("A candidate counts only when every seed has every task of the family (else 'missing', left out and "
        "listed); a diverged candidate is left out. Means are compared rounded to 1e-9; among tied candidates "
        "the shared setting (the grid's value without a sweep) wins, else the first in candidate order.")


def metric_of(family: str, overrides: dict | None = None) -> tuple[str, str | None]:
    """The (protocol, metric) selection reads for a family: the config's `selection.metric`,
    else the family's registry default (metric None: each GLUE task's first)."""
    spec = (overrides or {}).get(family)
    return tuple(spec.split()) if spec else FAMILIES[family].select_on


def _first_metric(rec: dict, protocol: str) -> str | None:
    metrics = (rec.get("results", {}).get(protocol) or {}).get("metrics", {})
    return next((m for m in metrics if not m.endswith("_stderr")), None)


def score_rows(val_files: list[str | Path], overrides: dict | None = None) -> pd.DataFrame:
    """One row per validation record: its cell, seed, task, the family's selection metric (%)."""
    rows = []
    for path in val_files:
        rec = json.loads(Path(path).read_text())
        if rec.get("split") != "val":  # a test record must never reach a choice
            raise ValueError(f"{path} is not a validation record (split {rec.get('split', 'test')!r})")
        protocol, metric = metric_of(rec["family"], overrides)
        metric = metric or _first_metric(rec, protocol)
        value = (rec.get("results", {}).get(protocol) or {}).get("metrics", {}).get(metric)
        rows.append({"model": rec["model"], "family": rec["family"], "method": rec["method"], "rank": rec["rank"],
                     "setting": rec["setting"], "values": rec.get("setting_values", {}), "seed": rec["seed"],
                     "task": rec["task"], "metric": f"{protocol} {metric}",
                     "diverged": bool(rec.get("diverged")), "value": None if value is None else 100 * value})
    return pd.DataFrame(rows, columns=CANDIDATE + ["values", "seed", "task", "metric", "diverged", "value"])


def loss_rows(train_files: list[str | Path], labels: dict[str, tuple]) -> pd.DataFrame:
    """One row per train record: its hold-out loss where the run ended (the kept adapter's with
    keep_best). `labels`: the record's path -> (family, setting label, values)."""
    rows = []
    for path in train_files:
        rec = json.loads(Path(path).read_text())
        family, setting, values = labels[str(path)]
        losses = dict((int(s), v) for s, v in rec.get("val_losses") or [])
        step = rec.get("kept_step") or (max(losses) if losses else None)
        rows.append({"model": rec["model"], "family": family, "method": rec["method"], "rank": rec["rank"],
                     "setting": setting, "values": values, "seed": rec["seed"], "task": rec["train_set"],
                     "metric": "validation loss", "diverged": bool(rec.get("diverged")),
                     "value": losses.get(step)})
    return pd.DataFrame(rows, columns=CANDIDATE + ["values", "seed", "task", "metric", "diverged", "value"])


def shown_values(label: str, values: pd.Series) -> dict:
    """A candidate's swept values; where its train sets resolve a factor differently (each GLUE
    dataset's own lr x 2), the label's factors ('x2.0') instead of one dataset's value."""
    first = values.iloc[0]
    if all(v == first for v in values) or label == "shared":
        return first
    return dict(part.split("=", 1) for part in label.split(","))


def candidates(scores: pd.DataFrame, seeds: list[int], tasks: dict[str, list[str]]) -> pd.DataFrame:
    """Per candidate: the mean over seeds of the mean over the family's tasks, and its status:
    ok, diverged, or missing (some seed lacks some task). `tasks`: family -> its tasks (train
    sets when the scores are losses)."""
    out = []
    for key, part in scores.groupby(CANDIDATE, sort=False):
        want = set(tasks.get(key[1], part["task"].unique()))
        per_seed = part.groupby("seed")
        complete = set(part["seed"]) >= set(seeds) and all(set(g["task"]) >= want for _, g in per_seed)
        status = "diverged" if part["diverged"].any() else (
            "missing" if not complete or part["value"].isna().any() else "ok")
        mean = per_seed["value"].mean().mean() if status == "ok" else None
        out.append({**dict(zip(CANDIDATE, key)), "values": shown_values(key[4], part["values"]),
                    "metric": part["metric"].iloc[0],
                    "score": mean, "seeds": part["seed"].nunique(), "status": status})
    return pd.DataFrame(out, columns=CANDIDATE + ["values", "metric", "score", "seeds", "status"])


def _tie_break(tied: list[str], order: list[str], shared: str | None) -> str:
    """Among equally good candidates: the shared setting, else the first the config lists."""
    if shared in tied:
        return shared
    return min(tied, key=lambda s: order.index(s) if s in order else len(order))


def select(cands: pd.DataFrame, order: dict[tuple, list[str]], shared: dict[tuple, str],
           lower_is_better: bool = False) -> pd.DataFrame:
    """The chosen candidate per (model, family, method, rank). `order`: (family, method) ->
    candidate labels as the config lists them; `shared`: (family, method) -> the shared label."""
    chosen = []
    for (_, family, method, _), part in cands.groupby(["model", "family", "method", "rank"], sort=False):
        ok = part[part.status == "ok"]
        if ok.empty:
            continue  # no complete candidate: the method has no tuned row (the candidates say why)
        score = ok.score.round(9)
        tied = ok[score == (score.min() if lower_is_better else score.max())]
        pick = _tie_break(list(tied.setting), order.get((family, method), []), shared.get((family, method)))
        chosen.append(tied[tied.setting == pick].iloc[0])
    return pd.DataFrame(chosen, columns=cands.columns).reset_index(drop=True)


def summary_by_setting(files: list[str | Path]) -> pd.DataFrame:
    """The tables' summary (mean, std, 95% CI over items and seeds) of each candidate's records
    (validation or test), with its setting: what the sensitivity figure draws."""
    parts = []
    records = [(f, json.loads(Path(f).read_text()).get("setting")) for f in files]
    for setting in dict.fromkeys(s for _, s in records):
        files = [f for f, s in records if s == setting]
        df = tables.load_records(files)
        parts.append(tables.summarise(df, item_scores.load(files)).assign(setting=setting))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def write(scores: pd.DataFrame, settings: dict, out_json: str | Path, out_csv: str | Path,
          select_by: str, summary: pd.DataFrame | None = None) -> dict:
    """selection.json (rule, choices, every candidate, the validation summary) and a CSV of the
    candidates. `settings`: {"seeds", "tasks", "order", "shared"} as the workflow knows them."""
    cands = candidates(scores, settings["seeds"], settings["tasks"])
    chosen = select(cands, settings["order"], settings["shared"], lower_is_better=select_by == "loss")
    picked = set(map(tuple, chosen[CANDIDATE].astype(str).values))
    cands["selected"] = [tuple(map(str, r)) in picked for r in cands[CANDIDATE].values]
    cands["shared"] = [settings["shared"].get((f, m)) == s for f, m, s in zip(cands.family, cands.method, cands.setting)]
    record = {"select_by": select_by, "rule": RULE,
              "selections": json.loads(chosen.to_json(orient="records")),
              "candidates": json.loads(cands.to_json(orient="records")),
              "validation": json.loads(summary.to_json(orient="records")) if summary is not None else []}
    atomic.write_json(out_json, record)
    atomic.write_text(out_csv, cands.to_csv(index=False))
    return record


def family_scores(summary: pd.DataFrame, overrides: dict | None = None) -> pd.DataFrame:
    """Per (model, family, method, rank, setting) row of a summary: the family's selection
    metric as the tables show it (mean, std, 95% CI), averaged over the family's tasks ('avg'
    row; without one, GLUE tasks with different metrics: the mean of each task's, no CI)."""
    out = []
    for key, part in summary[summary.method != "base"].groupby(CANDIDATE, sort=False):
        protocol, metric = metric_of(key[1], overrides)
        rows = part[part.protocol == protocol]
        if metric is None:  # GLUE: accuracy where every task has it, else each task's first metric
            tasks = rows[rows.task != "avg"].task
            metric = "accuracy" if set(rows[rows.metric == "accuracy"].task) >= set(tasks) else None
        pick = rows[rows.metric == metric] if metric else rows[rows.task != "avg"].drop_duplicates("task")
        avg = pick[pick.task == "avg"]
        if not avg.empty or pick.task.nunique() == 1:
            row = (avg if not avg.empty else pick).iloc[0]
            stats = {c: row[c] for c in ("mean", "std", "ci_low", "ci_high", "seeds") if c in row}
        else:
            stats = {"mean": pick["mean"].mean(), "seeds": pick["seeds"].min()}
        out.append({**dict(zip(CANDIDATE, key)), "metric": f"{protocol} {metric or 'first metric'}", **stats})
    return pd.DataFrame(out)


def sensitivity_rows(record: dict, test_summary: pd.DataFrame, overrides: dict | None = None) -> pd.DataFrame:
    """Validation and test score of every candidate, with its swept values and whether it was
    selected or is the shared setting: the sensitivity figure's data."""
    cands = pd.DataFrame(record["candidates"])
    parts = []
    for split, summary in (("validation", pd.DataFrame(record.get("validation") or [])), ("test", test_summary)):
        if summary.empty:
            continue
        summary = summary.assign(rank=pd.to_numeric(summary["rank"], errors="coerce").astype("Int64"))
        parts.append(family_scores(summary, overrides).assign(split=split))
    if not parts:
        return pd.DataFrame()
    rows = pd.concat(parts, ignore_index=True)
    cands = cands.assign(rank=cands["rank"].astype("Int64"))
    rows = rows.assign(rank=rows["rank"].astype("Int64")).merge(
        cands[CANDIDATE + ["values", "selected", "shared", "status"]], on=CANDIDATE, how="left")
    keys = sorted({k for v in cands["values"] for k in (v or {})})
    for key in keys:
        rows[key] = [(v or {}).get(key) if isinstance(v, dict) else None for v in rows["values"]]
    return rows.drop(columns=["values"])
