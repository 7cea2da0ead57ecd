"""The report page "Task-specific directions": each of the paper's questions, the paper's
answer, ours in one sentence computed from the tables, the figure and the table; the tables
(CSV) and figures (PNG) are written beside it."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import pandas as pd

from ... import atomic
from ..figures.style import DPI
from . import figures as figs
from . import measures as ms
from . import tables as tb

# The paper's answers (arXiv 2409.01035 v1 and the authors' write-up): where its numbers are not
# public, the page says so rather than guess them.
QUESTIONS = [
    ("spectrum", "Where do the true TSDs sit in the spectrum?",
     "Few directions change much, and they sit at smallish but not the smallest singular values: neither "
     "the top (PiSSA's choice) nor the very bottom (MiLoRA's) (full fine-tuning of LLaMA-7B, commonsense)."),
    ("recall", "How early does LoRA find them?",
     f"Checked every 100 steps on q, k and v at several ranks: recall (LoRA's top-{ms.FOUND} contain the true "
     f"top-{ms.TRUE_TOP}) and accuracy (LoRA's top-{ms.FOUND} all inside the true top-{ms.TRUE_POOL}); accuracy "
     "stays above 0.75 from early in training, which is what justifies a short pre-launch."),
    ("amplification", "Does LoRA-Dash amplify them?",
     "Analysed in the paper (how far LoRA-Dash amplifies the TSDs; the pre-launch, final and true directions "
     "against each other); its numbers are not public."),
    ("task_overlap", "Are they task-specific?",
     "The TSDs of different tasks overlap little; related tasks share more (SDXL DreamBooth subjects)."),
    ("ablation", "Do the TSDs matter for the dash?",
     "Analysed in the paper (the dash along the top- or bottom-singular directions instead of the TSDs; the "
     "pre-launch length t and the number of directions s); its numbers are not public."),
]

FILES = {name: f"tsd_{name}" for name, _, _ in QUESTIONS}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _pct(x) -> str:
    return "-" if pd.isna(x) else f"{100 * x:.0f}%"


def spectrum_answer(table: pd.DataFrame) -> str:
    rows = table[(table.module_type == tb.ALL) & (table.r == table.r.max())] if not table.empty else table
    return " ".join(
        f"{r.model} on {r.train_set} (seed {r.seed}): full fine-tuning's top-{ms.AMPLIFIED} directions per matrix "
        f"sit at median index {r.median_index:.0f} of {r.directions:.0f} (relative position {r.relative_position:.2f}, "
        f"0 = largest); {_pct(r.in_top_r)} inside PiSSA's top-{r.r}, {_pct(r.in_bottom_r)} inside MiLoRA's "
        f"bottom-{r.r}, {_pct(r.between)} between." for r in rows.itertuples())


def recall_answer(table: pd.DataFrame) -> str:
    out = []
    part = table[table.module_type == tb.ALL] if not table.empty else table
    for (model, train_set, method, rank), cell in part.groupby(["model", "train_set", "method", "rank"], sort=False):
        by_step = cell.groupby("step").mean(numeric_only=True)
        first, last = by_step.iloc[0], by_step.iloc[-1]
        out.append(f"{method} r{rank}, {model} on {train_set}: accuracy {first.accuracy:.2f} at step {by_step.index[0]} and "
                   f"{last.accuracy:.2f} at step {by_step.index[-1]} (chance {first.chance_accuracy:.2f}); recall "
                   f"{first.recall:.2f} then {last.recall:.2f} (chance {first.chance_recall:.2f}).")
    return " ".join(out)


def amplification_answer(amp: pd.DataFrame, selection: pd.DataFrame) -> str:
    out = []
    part = amp[(amp.module_type == tb.ALL) & (amp.method != "lora")] if not amp.empty else amp
    for (model, train_set, method, rank), cell in part.groupby(["model", "train_set", "method", "rank"], sort=False):
        against = "" if cell.vs_lora.isna().all() else f"{cell.vs_lora.mean():.2f}× LoRA's projection along the true " \
                                                         f"top-{ms.AMPLIFIED}, "
        out.append(f"{method} r{rank}, {model} on {train_set}: {against}{cell.vs_full.mean():.2f}× full "
                   "fine-tuning's.")
    for (model, train_set, method, rank, comparison), cell in selection.groupby(
            ["model", "train_set", "method", "rank", "comparison"], sort=False):
        if comparison in ("switch vs true", "switch vs end"):
            out.append(f"{method} r{rank}, {model} on {train_set}, {comparison}: overlap {cell.overlap.mean():.2f} "
                       f"(chance {cell.chance.mean():.2f}).")
    return " ".join(out)


def overlap_answer(table: pd.DataFrame) -> str:
    part = table[table.method == tb.FULL] if not table.empty else table
    return " ".join(f"{r.model}: the true top-{r.k} of {r.train_set_a} and {r.train_set_b} overlap {r.overlap:.2f} "
                    f"(chance {r.chance:.2f}, seed {r.seed})." for r in part.itertuples())


def ablation_answer(table: pd.DataFrame, swept: list[str]) -> str:
    if swept:
        out = [f"t and s: this grid sweeps {', '.join(swept)}; each family's sensitivity figure "
               "(plots/<family>/sensitivity.png) and tuned/sensitivity.csv give the score at each value."]
    else:
        out = ["t and s: not swept in this grid (a method_sweep of tsd.dash_t or tsd.dash_s for lora_dash does it)."]
    for (model, family, rank), cell in table.groupby(["model", "family", "rank"], sort=False):
        scores = "; ".join(f"{r.method} {r.score:.2f}" + ("" if pd.isna(r['std']) else f" ± {r['std']:.2f}")
                           for _, r in cell.iterrows())
        seeds = ", ".join(sorted({str(s) for s in cell.seeds}))
        out.append(f"{model}, {family}, r{rank} ({cell.metric.iloc[0]}, {seeds} seed(s)): {scores}.")
    return " ".join(out)


def build(train_records: list[dict], summary: pd.DataFrame, ranks: list[int], out_dir: str | Path,
          page: str | Path, title: str, swept: list[str] = ()) -> dict[str, Path]:
    """Write every table (CSV), figure (PNG) and the page; {name: path} of what was written.
    `swept`: the dash options a sweep of the grid names (its t and s ablations)."""
    out_dir = Path(out_dir)
    cells = tb.Cells(train_records)
    lacking = tb.missing(train_records, cells)
    why = {q: next((reason for reason, qs in lacking if q in qs), "") for q in tb.QUESTIONS}
    made = {"spectrum": tb.spectrum_table(cells, ranks), "recall": tb.recall_table(cells),
            "amplification": tb.amplification_table(cells), "selection": tb.selection_table(cells),
            "task_overlap": tb.task_overlap_table(cells)}
    made["ablation"] = tb.ablation_table(summary, made["amplification"])
    figures = {"spectrum": figs.spectrum_figure(cells, ranks, why["spectrum"]),
               "recall": figs.recall_figure(made["recall"], why["recall"]),
               "amplification": figs.amplification_figure(made["amplification"], why["amplification"]),
               "task_overlap": figs.task_overlap_figure(made["task_overlap"], why["task_overlap"]),
               "ablation": figs.ablation_figure(made["ablation"], why["ablation"])}
    answers = {"spectrum": spectrum_answer(made["spectrum"]), "recall": recall_answer(made["recall"]),
               "amplification": amplification_answer(made["amplification"], made["selection"]),
               "task_overlap": overlap_answer(made["task_overlap"]),
               "ablation": ablation_answer(made["ablation"], list(swept))}
    written = {}
    for name, table in made.items():
        written[f"{name}.csv"] = out_dir / f"tsd_{name}.csv"
        atomic.write_text(written[f"{name}.csv"], table.to_csv(index=False))
    images = {}
    for name, fig in figures.items():
        images[name] = _png(fig)
        written[f"{name}.png"] = out_dir / f"{FILES[name]}.png"
        with atomic.file(written[f"{name}.png"]) as tmp:
            Path(tmp).write_bytes(images[name])
    atomic.write_text(page, to_html(title, protocol(train_records), [r for r, _ in lacking], made, images, answers))
    written["page"] = Path(page)
    return written


def protocol(train_records: list[dict]) -> str:
    """What the numbers come from: models, train sets, methods, ranks, seeds, steps, dtype."""
    if not train_records:
        return "no trained cell"
    df = pd.DataFrame(train_records)
    steps = sorted({int(s) for s in df.get("steps", pd.Series(dtype=int)).dropna()})
    every = sorted({str((r.get("train_config") or {}).get("analysis_every")) for r in train_records})
    return (f"Models: {', '.join(sorted(df.model.unique()))}. Train sets: {', '.join(sorted(df.train_set.unique()))}. "
            f"Methods: {', '.join(sorted(df.method.unique()))}. Ranks: {', '.join(map(str, sorted(df['rank'].unique())))}. "
            f"Seeds: {', '.join(map(str, sorted(df.seed.unique())))}. Optimizer steps: {', '.join(map(str, steps))}; "
            f"snapshots every {', '.join(every)} steps. Base weights: "
            f"{', '.join(sorted(df.get('base_dtype', pd.Series(['?'])).dropna().astype(str).unique()))}. "
            f"True TSDs: full fine-tuning's top change rates |uᵢᵀ ΔW* vᵢ| / σᵢ, ΔW* = W − W₀, same model, train set "
            f"and seed.")


STYLE = ("body{font-family:sans-serif;margin:1em auto;max-width:1400px;padding:0 1em;line-height:1.4}"
         " table{border-collapse:collapse;font-size:0.8em;margin:0.5em 0} td,th{padding:2px 6px;white-space:nowrap}"
         " th{background:#eee} img{max-width:100%} .paper{border-left:4px solid #999;padding-left:0.6em}"
         " .ours{border-left:4px solid #ff7f0e;padding-left:0.6em} .lacking{background:#fff3cd;padding:0.5em}"
         " .scroll{overflow-x:auto}")


def to_html(title: str, how: str, lacking: list[str], made: dict, images: dict, answers: dict) -> str:
    esc = html.escape
    body = [f"<h1>{esc(title)}</h1>", f"<p>{esc(how)}</p>"]
    if lacking:
        body.append("<div class='lacking'><b>What this grid lacks</b><ul>"
                    + "".join(f"<li>{esc(x)}</li>" for x in lacking) + "</ul></div>")
    for name, question, paper in QUESTIONS:
        body += [f"<h2 id='{name}'>{esc(question)}</h2>", f"<p class='paper'><b>The paper:</b> {esc(paper)}</p>",
                 f"<p class='ours'><b>This grid:</b> {esc(answers[name] or 'nothing to measure (see above).')}</p>",
                 f"<img alt='{esc(question)}' src='data:image/png;base64,{base64.b64encode(images[name]).decode()}'>"]
        for key in (name, "selection") if name == "amplification" else (name,):
            table = made[key]
            body.append(f"<div class='scroll'>{table.round(4).to_html(index=False, border=1, na_rep='-')}</div>"
                        if not table.empty else "<p><i>No rows.</i></p>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")
