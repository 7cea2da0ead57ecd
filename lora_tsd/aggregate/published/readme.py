"""The README's two result tables, rendered from the published reference file between the
markers BEGIN and END: the scores table (a row per ROWS entry, a column per method, the base
model first) and the paired table (a row per PAIRED entry, a column per method but LoRA), then
a caption naming the file, its commit, the machine's CPU and the dtypes."""
from __future__ import annotations

import os
import re
from pathlib import Path

from ... import atomic
from .. import tables
from ..uncertainty import BASELINE
from . import stamp

REFERENCE = "docs/reference/default/leaderboard.json"
BEGIN = ("<!-- published tables: begin (python -m lora_tsd.aggregate.published readme writes this block from the "
         "published file; edit ROWS/PAIRED in lora_tsd/aggregate/published/readme.py, not the tables) -->")
END = "<!-- published tables: end -->"
_BLOCK = re.compile(r"(<!-- published tables: begin[^\n]*-->\n)(.*?)(<!-- published tables: end -->)", re.S)

# (family, protocol, task, metric, label): the scores table's rows, in order.
ROWS = [
    ("commonsense", "loglik", "arc_easy", "acc", "ARC-Easy acc"),
    ("commonsense", "loglik", "piqa", "acc", "PIQA acc"),
    ("commonsense", "generative", "arc_easy", "acc", "ARC-Easy acc"),
    ("commonsense", "generative", "piqa", "acc", "PIQA acc"),
    ("glue", "glue", "sst2", "accuracy", "SST-2 accuracy"),
    ("glue", "glue", "rte", "accuracy", "RTE accuracy"),
    ("instruction", "ifeval", "ifeval", "prompt_level_strict_acc", "prompt-level strict"),
    ("instruction", "ifeval", "ifeval", "inst_level_strict_acc", "instruction-level strict"),
]
# The paired table's rows (method − LoRA).
PAIRED = [
    ("commonsense", "loglik", "avg", "acc", "commonsense avg acc, loglik"),
    ("commonsense", "generative", "avg", "acc", "commonsense avg acc, generative"),
    ("commonsense", "generative", "piqa", "acc", "PIQA acc, generative"),
    ("glue", "glue", "avg", "accuracy", "GLUE avg accuracy"),
    ("instruction", "ifeval", "ifeval", "prompt_level_strict_acc", "IFEval prompt-level strict"),
    ("instruction", "ifeval", "ifeval", "inst_level_strict_acc", "IFEval instruction-level strict"),
]
PAIRED_INTRO = ("Paired with LoRA on the same test items and seeds (method − LoRA in points, [95% CI], sign-flip\n"
                "permutation p-value; ▲/▼ where the CI excludes 0):")


def _one(rows: list[dict], where: str) -> dict | None:
    """The single row of a table cell; several (more models or ranks than the table has columns
    for) would be a silent choice."""
    if len(rows) > 1:
        raise stamp.Problem(f"{len(rows)} rows for {where} (several models or ranks): the README table shows one")
    return rows[0] if rows else None


def _find(rows: list[dict], family: str, protocol: str, task: str, metric: str, method: str) -> dict | None:
    hits = [r for r in rows if (r["family"], r["protocol"], r["task"], r["metric"], r["method"]) ==
            (family, protocol, task, metric, method)]
    return _one(hits, f"{family} {protocol} {task} {metric} {method}")


def methods(published: dict, rows: list[dict]) -> list[str]:
    """The methods with rows, in the config's order (else first seen)."""
    seen = list(dict.fromkeys(r["method"] for r in rows))
    order = [m for m in (published.get("config") or {}).get("methods", []) if m in seen]
    return order + [m for m in seen if m not in order]


def score(row: dict | None) -> str:
    """mean ± std [95% CI] as the leaderboard writes it (no std for one seed), and how many seeds
    stand behind it when fewer than the grid's."""
    if row is None or row.get("mean") is None:
        return "-"
    text = f"{row['mean']:.2f}" + ("" if row.get("std") is None else f" ± {row['std']:.2f}")
    text += "" if row.get("ci_low") is None else f" [{row['ci_low']:.1f}, {row['ci_high']:.1f}]"
    wanted = row.get("expected_seeds") or row["seeds"]
    return text if row["seeds"] >= wanted else f"{text} ({row['seeds']} of {wanted} seeds)"


def paired(row: dict | None) -> str:
    return "-" if row is None else tables.paired_cell(row)


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def scores_table(published: dict) -> list[str]:
    summary = published["summary"]
    shown = ["base"] + [m for m in methods(published, summary) if m != "base"]
    lines = [_line(["family, protocol", "task, metric", *shown]), "|" + "---|" * (2 + len(shown))]
    group = None
    for family, protocol, task, metric, name in ROWS:
        cells = [score(_find(summary, family, protocol, task, metric, m)) for m in shown]
        if all(c == "-" for c in cells):
            continue  # a task this grid does not have
        head = f"{family}, {protocol}" if (family, protocol) != group else ""
        group = (family, protocol)
        lines.append(_line([head, name, *cells]))
    return lines


def paired_table(published: dict) -> list[str]:
    rows = published.get("comparisons", [])
    shown = [m for m in methods(published, rows) if m != BASELINE]
    lines = [_line(["method − LoRA", *shown]), "|" + "---|" * (1 + len(shown))]
    for family, protocol, task, metric, name in PAIRED:
        cells = [paired(_find(rows, family, protocol, task, metric, m)) for m in shown]
        if not all(c == "-" for c in cells):
            lines.append(_line([name, *cells]))
    return lines


def _machine(hardware: dict) -> str:
    """The CPU, its bf16 ISA flags (what moves a bf16 number) and any GPU."""
    flags = [f for f in hardware.get("cpu_flags", []) if "bf16" in f]
    return (hardware.get("cpu", "an unnamed CPU") + (f" ({', '.join(flags)})" if flags else "")
            + (f", {hardware['gpu']}" if hardware.get("gpu") else ""))


def caption(published: dict, shown_path: str) -> str:
    made = published.get("published", {})
    # A CPU's records differ in compute dtype (and threads): one name per machine.
    machines = "; ".join(dict.fromkeys(_machine(m["hardware"]) for m in made.get("machines", [])))
    dtypes = ", ".join(d for d in made.get("eval_dtypes", {}))
    commit = str(made.get("commit"))
    commit = commit[:7] + ("-dirty" if commit.endswith("-dirty") else "")
    return (f"*Generated from `{shown_path}` (tables at commit `{commit}`, "
            f"config `{made.get('config_hash')}`; {machines}; eval dtypes {dtypes}) by "
            f"`python -m lora_tsd.aggregate.published readme`.*")


def block(published: dict, shown_path: str) -> str:
    """What goes between the markers."""
    return "\n".join(["", *scores_table(published), "", PAIRED_INTRO, "", *paired_table(published), "",
                      caption(published, shown_path), ""]) + "\n"


def _shown_path(readme: Path, reference: Path) -> str:
    return os.path.relpath(reference.resolve(), readme.resolve().parent)


def rendered(readme: str | Path, reference: str | Path = REFERENCE) -> tuple[str, str]:
    """(the README's text now, the text with its block rendered from the reference)."""
    readme, reference = Path(readme), Path(reference)
    published = stamp.read_json(reference, "published reference")
    if not readme.is_file():
        raise stamp.NotFound(f"no README at {readme}")
    text = readme.read_text()
    if not _BLOCK.search(text):
        raise stamp.Problem(f"{readme} has no published-tables block (lines '<!-- published tables: begin ... -->' "
                         f"and '{END}')")
    new = block(published, _shown_path(readme, reference))
    return text, _BLOCK.sub(lambda m: m.group(1) + new + m.group(3), text, count=1)


def check(readme: str | Path, reference: str | Path = REFERENCE) -> bool:
    """Whether the README's block is what the published file gives."""
    now, wanted = rendered(readme, reference)
    return now == wanted


def update(readme: str | Path, reference: str | Path = REFERENCE) -> bool:
    """Rewrite the README's block from the published file; whether it changed."""
    now, wanted = rendered(readme, reference)
    if now != wanted:
        atomic.write_text(readme, wanted)
    return now != wanted
