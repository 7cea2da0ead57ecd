"""Results tables: one table per family and protocol, a row per method (and the untuned base
model), a column per task and metric: mean ± std over seeds, the 95% CI over items and seeds,
and a mark where the paired comparison with LoRA on the same items excludes 0; then each
family's cost table and the paired comparisons in full. Only finished evaluation records
are read (they are written atomically after training and scoring both succeeded)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .. import atomic
from . import forgetting
from . import page as pages
from . import reproduction
from . import items as item_scores
from . import uncertainty
from ..evaluation.protocols import METRIC_ORDER, PROTOCOLS
from ..data.tasks import FAMILIES

ROW = ["family", "protocol", "model", "method", "rank"]
DIVERGED = "diverged"  # the metric of a diverged cell's marker rows (value NaN)
FLAGS = {"no_decrease": "its last losses are not below its first",
         "uniform_output": "its loss sits at a uniform output's (ln of the vocabulary or class count)"}


def load_records(eval_files: list[str | Path]) -> pd.DataFrame:
    """Long format: one row per (cell, task, protocol, metric); scores in % (x100)."""
    rows = []
    for path in eval_files:
        rec = json.loads(Path(path).read_text())
        train = rec.get("train", {})
        cell = {"family": rec["family"], "model": rec["model"], "train_set": rec["train_set"],
                "task": rec["task"], "method": rec.get("method", "base"), "rank": rec.get("rank"),
                "seed": rec.get("seed"), "trainable_params": train.get("trainable_params", 0),
                "steps": train.get("steps", 0), "final_loss": train.get("final_loss"),
                "train_time_s": train.get("train_time_s"), "commit": train.get("git_commit"),
                "peak_mem_mb": train.get("peak_gpu_mem_mb", train.get("peak_rss_mb")),
                "tokens_per_s": train.get("tokens_per_s"), "base_params": train.get("base_params"),
                "adapter_bytes": rec.get("adapter_bytes"),
                **({"setting": rec["setting"]} if rec.get("setting") else {}),  # a sweep's candidate
                "lr": (train.get("train_config") or {}).get("lr"),
                "batch_size": (train.get("train_config") or {}).get("batch_size"),
                "loss_flag": train.get("loss_flag"),
                "diverged_step": (rec.get("diverged") or {}).get("step")}
        if rec.get("diverged"):  # a result, not a score: one marker row per protocol of the family
            asked = (rec.get("eval_config") or {}).get("protocols") or FAMILIES[rec["family"]].protocols
            rows += [{**cell, "protocol": protocol, "n_test": None, "metric": DIVERGED, "value": float("nan"),
                      "stderr": None} for protocol in FAMILIES[rec["family"]].protocols if protocol in asked]
        for protocol, res in rec["results"].items():
            for metric, value in res["metrics"].items():
                if metric.endswith("_stderr") or value is None:
                    continue
                stderr = res["metrics"].get(f"{metric}_stderr")
                rows.append({**cell, "protocol": protocol, "n_test": res.get("n_test"), "metric": metric,
                             "value": 100 * value, "stderr": None if stderr is None else 100 * stderr})
    df = pd.DataFrame(rows)
    df["rank"] = df["rank"].astype("Int64")
    df["seed"] = df["seed"].astype("Int64")
    order = {f: i for i, f in enumerate(FAMILIES)}
    rank = {m: i for ms in METRIC_ORDER.values() for i, m in enumerate(ms)}
    df = df.assign(_f=df["family"].map(order), _b=df["method"].ne("base"), _m=df["metric"].map(rank).fillna(99))
    # Metrics in the protocol's table order (METRIC_ORDER), others as recorded.
    return df.sort_values(["_f", "protocol", "model", "_b", "method", "rank", "seed", "task", "_m"], kind="stable") \
             .drop(columns=["_f", "_b", "_m"]).reset_index(drop=True)


MISSING = "missing"  # a (row, task) the grid has no record for


def expected_seeds(df: pd.DataFrame) -> pd.Series:
    """Seeds each (family, protocol, model) has for its trained methods: what every trained
    row of that table must show (base rows have one, seedless, record)."""
    trained = df[df.method != "base"]
    return trained.groupby(["family", "protocol", "model"])["seed"].nunique()


def with_averages(df: pd.DataFrame) -> pd.DataFrame:
    """Add task 'avg' per seed for metrics every task of a family/protocol reports (the
    commonsense tables' average column), when there is more than one task. A seed that lacks
    one of its model's tasks gets no average: nothing is averaged over whatever exists."""
    extra = []
    scored = df[df.metric != DIVERGED]
    # A seed with a diverged task has no average: it is not averaged over the tasks that remain.
    gone = set(map(tuple, df.loc[df.metric == DIVERGED, ROW + ["seed"]].astype(str).values))
    scored = scored[[tuple(r) not in gone for r in scored[ROW + ["seed"]].astype(str).values]]
    for (family, protocol), part in scored.groupby(["family", "protocol"], sort=False):
        tasks = part["task"].unique()
        if len(tasks) < 2:
            continue
        shared = [m for m in part["metric"].unique() if part.loc[part.metric == m, "task"].nunique() == len(tasks)]
        keys = ROW + ["seed", "metric"]
        sub = part[part["metric"].isin(shared)]
        expected = df[(df.family == family) & (df.protocol == protocol)].groupby("model")["task"].nunique()
        complete = sub.groupby(keys, sort=False, dropna=False)["task"].transform("nunique")
        sub = sub[complete.values == sub["model"].map(expected).values]
        means = sub.assign(rank=sub["rank"].astype("string").fillna("-"), seed=sub["seed"].fillna(-1)) \
                   .groupby(keys, sort=False)["value"].mean().reset_index()
        extra.append(means.assign(task="avg"))
    if not extra:
        return df
    avg = pd.concat(extra)
    avg["rank"] = avg["rank"].replace("-", pd.NA).astype("Int64")
    avg["seed"] = avg["seed"].where(avg["seed"] >= 0).astype("Int64")
    return pd.concat([df, avg], ignore_index=True)


def summarise(df: pd.DataFrame, items: dict | None = None) -> pd.DataFrame:
    """Mean ± std (ddof=1; blank for a single seed) and median over seeds per row and column,
    the costs, and (given per-item scores) the 95% CI over items and seeds."""
    full = with_averages(df)
    full = full[full.metric != DIVERGED]
    keys = ROW + ["task", "metric"]
    g = full.assign(rank=full["rank"].astype("string").fillna("-")).groupby(keys, sort=False)
    out = g.agg(seeds=("value", "count"), mean=("value", "mean"), std=("value", "std"),
                median=("value", "median")).reset_index()
    wanted = expected_seeds(df)
    out["expected_seeds"] = [1 if m == "base" else int(wanted.get((f, p, mo), 1))
                             for f, p, mo, m in zip(out.family, out.protocol, out.model, out.method)]
    costs = df.assign(rank=df["rank"].astype("string").fillna("-")).groupby(ROW, sort=False).agg(
        trainable_params=("trainable_params", "first"), base_params=("base_params", "first"),
        train_time_s=("train_time_s", "mean"), peak_mem_mb=("peak_mem_mb", "max"),
        tokens_per_s=("tokens_per_s", "mean"), adapter_bytes=("adapter_bytes", "mean")).reset_index()
    out = out.merge(costs, on=ROW, how="left")
    if "forgetting" in df.columns:  # forgetting is scored (write's forgetting_files)
        out["rank"] = out["rank"].astype("string")
        out = out.merge(forgetting.per_row(df), on=["family", "model", "method", "rank"], how="left")
    if items:
        out = uncertainty.intervals(out, items)
    return out


def _pm(mean, std) -> str:
    return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"


def _fmt(value, decimals: int) -> str:
    if pd.isna(value):
        return "-"
    return f"{value:.{decimals}f}" if isinstance(value, float) else str(value)


def _cell(r, mark: str = "") -> str:
    """mean ± std [95% CI], the median for GLUE (its convention), a paired-comparison mark,
    and a note when fewer seeds than the grid's stand behind it."""
    text = _pm(r["mean"], r["std"])
    if r["family"] == "glue" and r["seeds"] > 1:
        text += f" (median {r['median']:.2f})"
    if pd.notna(r.get("ci_low", float("nan"))):
        text += f" [{r['ci_low']:.1f}, {r['ci_high']:.1f}]"
    text += mark
    return text if r["seeds"] >= r["expected_seeds"] else f"{text} ({r['seeds']} of {r['expected_seeds']} seeds)"


NO_SWEEP = "every method at the grid's one shared setting (no sweep, so untuned per method)."
# Which way each cost column is better (the report pages mark each column's best value).
COST_BETTER = {"trainable params": pages.LOWER, "% of base": pages.LOWER, "peak memory (MB)": pages.LOWER,
               "train time (s)": pages.LOWER, "tokens/s": pages.HIGHER, "adapter (MB)": pages.LOWER,
               forgetting.COLUMN: pages.LOWER}
KEY_COLUMNS = {"model", "method", "rank", "seeds", "selected setting"}  # a score table's columns that are no score
UP, DOWN = " ▲", " ▼"  # the paired difference with LoRA has a 95% CI above / below 0


def arrow(r) -> str:
    """▲/▼ for a significant comparison (a row of `uncertainty.comparisons`, as a mapping: its CI
    excludes 0), else nothing."""
    return (UP if r["diff"] > 0 else DOWN) if r["significant"] else ""


def paired_cell(r) -> str:
    """A paired comparison with LoRA as the tables write it: diff [95% CI] p, and its mark."""
    return f"{r['diff']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}] {_p(r['p'])}{arrow(r)}"


def task_columns(names) -> list[str]:
    """'task metric' column names in first-seen order, the 'avg ...' ones last."""
    seen = list(dict.fromkeys(names))
    return [c for c in seen if not c.startswith("avg ")] + [c for c in seen if c.startswith("avg ")]


def marks(compared: pd.DataFrame | None) -> dict[tuple, str]:
    """(model, method, rank, task, metric) -> ▲/▼ where the comparison with LoRA is significant."""
    if compared is None or compared.empty:
        return {}
    sig = compared[compared.significant]
    return {(r["model"], r["method"], r["rank"], r["task"], r["metric"]): arrow(r) for r in sig.to_dict("records")}


def family_table(summary: pd.DataFrame, family: str, protocol: str, df: pd.DataFrame | None = None,
                 compared: pd.DataFrame | None = None) -> pd.DataFrame:
    part = summary[(summary.family == family) & (summary.protocol == protocol)]
    # Only this table's comparisons: another protocol scores the same task and metric name.
    mark = marks(compared[(compared.family == family) & (compared.protocol == protocol)]
                 if compared is not None and not compared.empty else None)
    part = part.assign(column=part["task"] + " " + part["metric"],
                       cell=[_cell(r, mark.get((r["model"], r["method"], r["rank"], r["task"], r["metric"]), ""))
                             for r in part.to_dict("records")])
    rows = ["model", "method", "rank"]
    table = part.pivot_table(index=rows, columns="column", values="cell", aggfunc="first", sort=False)
    columns = task_columns(part["column"])
    meta = part.groupby(rows, sort=False).agg(seeds=("seeds", "max"))
    # A row without any record of a task (or, for the average, of a task in some seed) says so.
    table = table[columns].fillna(MISSING).join(meta).reset_index().rename_axis(columns=None)
    table = table[rows + ["seeds"] + columns]
    return mark_faults(table, df[(df.family == family) & (df.protocol == protocol)] if df is not None else None)


def cost_table(summary: pd.DataFrame, family: str) -> pd.DataFrame:
    """What each trained row cost: parameters (and % of the base model), peak memory, train
    time with any init stage, throughput and adapter size; means over seeds and train sets;
    and, where forgetting is scored, its mean ± std (n/a for encoder families)."""
    part = summary[(summary.family == family) & (summary.method != "base")].drop_duplicates(
        ["model", "method", "rank"])
    pct = 100 * part["trainable_params"] / part["base_params"]
    scored = {forgetting.COLUMN: [forgetting.cell_text(family, m, s) for m, s in
                                  zip(part["forgetting"], part["forgetting_std"])]} if "forgetting" in part else {}
    return pd.DataFrame({
        "model": part["model"], "method": part["method"], "rank": part["rank"],
        "trainable params": [_fmt(int(v), 0) if pd.notna(v) else "-" for v in part["trainable_params"]],
        "% of base": [f"{v:.3f}" if pd.notna(v) else "-" for v in pct],
        "peak memory (MB)": [_fmt(float(v), 0) for v in part["peak_mem_mb"]],
        "train time (s)": [_fmt(float(v), 1) for v in part["train_time_s"]],
        "tokens/s": [_fmt(float(v), 0) for v in part["tokens_per_s"]],
        "adapter (MB)": [_fmt(float(v) / 2**20, 2) if pd.notna(v) else "-" for v in part["adapter_bytes"]],
        **scored,
    })


def cells_table(df: pd.DataFrame, family: str) -> pd.DataFrame:
    """One row per trained cell of a family (train set x method x rank x seed)."""
    cols = ["model", "train_set", "method", "rank", "seed", "steps", "lr", "batch_size", "final_loss", "loss_flag",
            "diverged_step", "train_time_s", "commit"]
    part = df[(df.family == family) & (df.method != "base")].drop_duplicates(["model", "train_set", "method", "rank", "seed"])
    out = part[cols].astype(object)  # "-" for a missing value, whatever the column's dtype
    out = out.where(out.notna(), "-")
    whole = lambda v: "-" if pd.isna(v) else str(int(v))  # noqa: E731 (a float column where a value is missing)
    out = out.assign(final_loss=part["final_loss"].map(lambda v: _fmt(v, 4)),
                     batch_size=part["batch_size"].map(whole), diverged_step=part["diverged_step"].map(whole),
                     train_time_s=part["train_time_s"].map(lambda v: _fmt(v, 1)),
                     commit=part["commit"].map(lambda c: "-" if pd.isna(c) else str(c)[:10]))
    if "forgetting" in part:  # forgetting is scored: the cell's own value (n/a for encoder families)
        out.insert(len(cols) - 2, "forgetting",
                   [forgetting.cell_text(family, v, float("nan")) for v in part["forgetting"]])
    return out


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def comparison_table(compared: pd.DataFrame, family: str, protocol: str) -> pd.DataFrame:
    """Method - LoRA in points per task and metric: diff [95% CI] p, marked when the CI excludes 0."""
    part = compared[(compared.family == family) & (compared.protocol == protocol)]
    if part.empty:
        return pd.DataFrame()
    part = part.assign(column=part["task"] + " " + part["metric"],
                       cell=[paired_cell(r) for r in part.to_dict("records")])
    table = part.pivot_table(index=["model", "method", "rank"], columns="column", values="cell", aggfunc="first",
                             sort=False)
    columns = task_columns(part["column"])
    return table[columns].fillna("-").reset_index().rename_axis(columns=None)


def mark_faults(table: pd.DataFrame, df: pd.DataFrame | None) -> pd.DataFrame:
    """A diverged cell shows "diverged (step N)" in its task's columns (and no average); a
    method whose loss did not learn is marked † (explained under the table)."""
    if df is None or df.empty:
        return table
    table = table.astype(object)
    key = lambda r: (r["model"], r["method"], str(r["rank"]) if pd.notna(r["rank"]) else "-")
    index = {key(r): i for i, r in table.iterrows()}
    for _, r in df[df.metric == DIVERGED].iterrows():
        if key(r) not in index:  # every seed diverged: the row exists only as this result
            table.loc[len(table)] = {**{c: "-" for c in table.columns}, "model": r["model"], "method": r["method"],
                                     "rank": key(r)[2], "seeds": 0}
            index[key(r)] = table.index[-1]
        i = index[key(r)]
        note = f"diverged (step {int(r['diverged_step'])}, seed {int(r['seed'])})"
        for column in table.columns:
            if column.startswith(f"{r['task']} "):
                old = table.at[i, column]
                table.at[i, column] = note if old in ("-", None, MISSING) or pd.isna(old) or old.startswith("diverged") \
                    else f"{old}; {note}"
            elif column.startswith("avg "):
                table.at[i, column] = "-"  # not an average over the tasks that remain
    for _, r in df[df.loss_flag.notna()].drop_duplicates(["model", "method", "rank"]).iterrows():
        if key(r) in index and not str(table.at[index[key(r)], "method"]).endswith("†"):
            table.at[index[key(r)], "method"] = f"{r['method']} †"
    return table


def with_selected(table: pd.DataFrame, selected: dict | None, family: str) -> pd.DataFrame:
    """A tuned table's rows with the setting each method was selected at, after `method`
    (`selected`: (model, family, method, rank) -> label; a model can serve two families)."""
    if not selected or table.empty:
        return table
    keys = zip(table["model"], [family] * len(table), table["method"].astype(str).str.removesuffix(" †"),
               table["rank"].astype(str))
    column = [selected.get(k, "-" if m == "base" else "not selected") for k, m in
              zip(keys, table["method"].astype(str))]
    return table.assign(**{"selected setting": column})[
        list(table.columns[:2]) + ["selected setting"] + list(table.columns[2:])]


def shown(table: pd.DataFrame, better: dict[str, str], protocol: str | None = None) -> pd.DataFrame:
    """A table with what the report pages need to know (DataFrame.attrs): which way each
    value column is better (column -> pages.HIGHER/LOWER) and the protocol it belongs to."""
    table.attrs.update(better={c: d for c, d in better.items() if c in table.columns},
                       **({"protocol": protocol} if protocol else {}))
    return table


def higher_is_better(table: pd.DataFrame) -> dict[str, str]:
    """A score or paired table's task columns: every metric here (accuracies, F1, MCC,
    correlations, IFEval's rates, differences with LoRA) is better higher."""
    return {c: pages.HIGHER for c in table.columns if c not in KEY_COLUMNS}


def blocks(df: pd.DataFrame, summary: pd.DataFrame, stamp: dict, compared: pd.DataFrame | None = None,
           selected: dict | None = None, forgetting_bases: list[dict] | None = None) -> list[tuple]:
    """The leaderboard as (family or None, tag, content) blocks, tag one of h1/h2/h3/p/li/table/
    figure: rendered as the markdown leaderboard and as each family's page of the HTML report
    (a table's attrs say which way its columns are better; a figure block names the family's
    figure that follows the tables it illustrates: on the report pages only).
    `selected` ((model, family, method, rank) -> setting label) makes it a sweep's tuned leaderboard;
    `forgetting_bases` (the base models' forgetting records) says what the forgetting column measured."""
    seeds = sorted(int(s) for s in df["seed"].dropna().unique())
    compared = compared if compared is not None else pd.DataFrame(columns=uncertainty.KEY + ["significant"])
    setting = stamp.get("setting", "")
    out = [
        (None, "h1", stamp.get("title", "Leaderboard")),
        (None, "li", f"Models: {', '.join(sorted(df['model'].unique()))}. Seeds: {seeds}; cells show mean ± std over "
         "seeds (GLUE: and the median, its convention) and [the 95% CI]: a bootstrap that draws seeds, then test "
         "items within each seed, so it covers both. Scores in %. 'base' is the untuned model on the same held-out "
         "rows (an encoder's base has a fresh seed-0 head: chance level)."),
        (None, "li", "▲/▼: the paired comparison with LoRA at the same model and rank, on the same test items and "
         "seeds, has a 95% CI above/below 0 (the tables 'Paired with LoRA' give the difference, its CI and a "
         f"sign-flip permutation p-value, {uncertainty.stats.N_PERM} permutations; no correction for multiple "
         "comparisons)."),
        *([(None, "li", f"Setting: {setting}")] if setting else []),
        (None, "li", f"Data: {stamp['data']}"),
        (None, "li", f"Tables written at commit `{stamp['commit']}` from config `{stamp['config_hash']}` "
         f"(the full config is in leaderboard.json); cells trained at commit(s) "
         f"{', '.join(f'`{c}`' for c in stamp.get('cell_commits', [])) or 'n/a'}."),
    ]
    for family in FAMILIES:
        if df[df.family == family].empty:
            continue
        for protocol in FAMILIES[family].protocols:
            part = df[(df.family == family) & (df.protocol == protocol)]
            if part.empty:
                continue
            n_test = ", ".join(f"{t} {int(n)}" for t, n in part.groupby("task")["n_test"].max().dropna().items())
            scores = with_selected(family_table(summary, family, protocol, df, compared), selected, family)
            out += [(family, "h2", f"{family} — {protocol}"),
                    (family, "p", f"Protocol: {PROTOCOLS[protocol]}. Models: {', '.join(sorted(part['model'].unique()))}. "
                     f"Test rows: {n_test}."),
                    (family, "table", shown(scores, higher_is_better(scores), protocol))]
            flagged = part[part.loss_flag.notna()].drop_duplicates(["model", "method", "rank", "seed"])
            if not flagged.empty:
                out.append((family, "p", "† The training loss did not learn: " + "; ".join(
                    f"{r.method} r{r.rank} seed {r.seed}: {FLAGS[r.loss_flag]}" for r in flagged.itertuples()) + "."))
            paired = comparison_table(compared, family, protocol)
            if not paired.empty:
                out += [(family, "h3", f"Paired with LoRA — {family}, {protocol}"),
                        (family, "p", "Method − LoRA in points: mean difference over seeds [95% CI] and the "
                         "permutation p-value."),
                        (family, "table", shown(paired, higher_is_better(paired), protocol))]
        # The family's figures of scores (every protocol in one figure) below its score tables.
        out += [(family, "figure", "bars"), (family, "figure", "rank"),
                (family, "h3", f"Cost — {family}"),
                (family, "p", "Means over seeds and train sets. Train time includes any init stage (LoRA-Init's "
                 "warm-up, EVA's SVD stage); peak memory is the GPU's peak allocation, or the process's peak RSS "
                 "on CPU."),
                *([(family, "p", forgetting.note(family, forgetting_bases))] if forgetting_bases is not None else []),
                (family, "table", shown(with_selected(cost_table(summary, family), selected, family), COST_BETTER)),
                (family, "figure", "pareto")]
    return out + [("reproduction", tag, content)
                  for tag, content in reproduction.blocks(reproduction.table(summary), setting or NO_SWEEP)]


def to_markdown(df: pd.DataFrame, summary: pd.DataFrame, stamp: dict, compared: pd.DataFrame | None = None,
                selected: dict | None = None, forgetting_bases: list[dict] | None = None) -> str:
    lines = []
    for _, tag, content in blocks(df, summary, stamp, compared, selected, forgetting_bases):
        if tag == "figure":  # the report pages' figures (plots/<family>/<name>.png)
            continue
        if tag == "table":
            lines += [content.to_markdown(index=False, disable_numparse=True), ""]
        elif tag == "li":
            lines.append(f"- {content}")
        else:
            prefix = {"h1": "# ", "h2": "## ", "h3": "### ", "p": ""}[tag]
            lines += ([""] if lines and lines[-1].startswith("- ") else []) + [prefix + content, ""]
    return "\n".join(lines)


def to_html(all_blocks: list[tuple], family: str | None, title: str, figures: dict[str, bytes] | None = None,
            captions: dict[str, str] | None = None) -> str:
    """One family's tables (and the shared header) as a standalone HTML page for the report,
    with its figures where given (name -> PNG bytes); family None: every block (the whole
    leaderboard). See page.render."""
    return pages.render(all_blocks, family, title, figures, captions)


def write(eval_files: list[str | Path], config: dict, stamp: dict, out_md: str | Path,
          out_csv: str | Path, out_json: str | Path, out_paired: str | Path | None = None,
          out_pages: dict[str | None, str | Path] | None = None, selected: dict | None = None,
          forgetting_files: list[str | Path] | None = None,
          out_blocks: dict[str, str | Path] | None = None) -> pd.DataFrame:
    """The markdown, CSV and JSON leaderboards, the paired comparisons (CSV) and, per key of
    out_pages (a family, 'reproduction', or None: the whole leaderboard), an HTML page for the
    report (a family's without its figures); per family of out_blocks, that family's page as
    blocks (page.dump, JSON), which the plots rule renders with the figures. With `selected`,
    a sweep's tuned leaderboard (stamp: its title and setting line). With `forgetting_files`
    (the base models' and cells' forgetting records; a list, maybe empty, when forgetting is
    scored), a forgetting column in the CSV and the cost tables."""
    df = load_records(eval_files)
    bases = None
    if forgetting_files is not None:
        cells, bases = forgetting.load(forgetting_files)
        df = forgetting.attach(df, cells)
    stamp = {**stamp, "cell_commits": sorted(c for c in df["commit"].dropna().unique())}
    scores = item_scores.load(eval_files)
    summary = summarise(df, scores)
    compared = uncertainty.comparisons(summary, scores)
    atomic.write_text(out_csv, df.to_csv(index=False))
    if out_paired:
        atomic.write_text(out_paired, compared.to_csv(index=False))
    atomic.write_json(out_json, {"stamp": stamp, "config": config, "protocols": PROTOCOLS,
                                 "summary": json.loads(summary.to_json(orient="records")),
                                 "comparisons": json.loads(compared.to_json(orient="records")),
                                 "reproduction": json.loads(reproduction.table(summary).to_json(orient="records")),
                                 **({"forgetting": {"base": bases,
                                                    "cells": json.loads(cells.to_json(orient="records"))}}
                                    if bases is not None else {})})
    atomic.write_text(out_md, to_markdown(df, summary, stamp, compared, selected, bases))
    parts = blocks(df, summary, stamp, compared, selected, bases)
    name, board = config.get("name", "grid"), stamp.get("title", "Leaderboard").lower()
    if None in (out_pages or {}):
        atomic.write_text(out_pages[None], to_html(parts, None, f"{name} {board}"))
    for family in df["family"].unique():
        parts += [(family, "h3", f"Cells — {family}"),
                  (family, "p", "Every trained cell: its recipe, where its loss ended, and its cost."),
                  (family, "table", cells_table(df, family)),
                  *[(family, "figure", figure) for figure in ("loss_curves", "tsd_profile", "tsd_overlap")]]
    for part, path in (out_pages or {}).items():
        if part is not None:
            atomic.write_text(path, to_html(parts, part, f"{part}: {name} {board}"))
    for family, path in (out_blocks or {}).items():
        mine = [b for b in parts if b[0] in (None, family)]
        atomic.write_json(path, pages.dump(mine, f"{family}: {name} {board}"))
    return df
