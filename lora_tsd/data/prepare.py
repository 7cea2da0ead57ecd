"""Task data: normalised examples, the deterministic train/test carve of the embedded
validation splits, and the train sets built from them (tokenising is encoding.py's)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .. import atomic
from . import prompts, train_files
from .tasks import TASKS, TRAIN_SETS


def carve_key(example: dict, salt: str) -> float:
    """A number in [0, 1) fixed by the example's content and the salt: identical examples
    always land on the same side, so the carve is disjoint and reproducible anywhere."""
    blob = json.dumps(example, sort_keys=True, ensure_ascii=False)
    digest = hashlib.sha256(f"{salt}\x00{blob}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def carve(examples: list[dict], test_fraction: float, salt: str) -> tuple[list[dict], list[dict]]:
    train, test, seen = [], [], set()
    for ex in examples:
        key = json.dumps(ex, sort_keys=True)
        if key in seen:  # exact duplicates would only inflate one side
            continue
        seen.add(key)
        (test if carve_key(ex, salt) < test_fraction else train).append(ex)
    return train, test


def hold_out(rows: list[dict], n: int, salt: str) -> tuple[list[dict], list[dict]]:
    """(rest, validation): the n rows with the lowest carve key under a salt of their own, each
    side in its original order. Fixed by content, so the same rows are held out anywhere."""
    chosen = set(sorted(range(len(rows)), key=lambda i: carve_key(rows[i], f"{salt}/validation"))[:n])
    return [r for i, r in enumerate(rows) if i not in chosen], [r for i, r in enumerate(rows) if i in chosen]


def packaged_path(relative: str) -> Path:
    """A data file this package ships (lora_tsd/data/instruction_data/...)."""
    return Path(__file__).resolve().parent / relative


class MissingDataset(RuntimeError):
    """A hub dataset that the hub (or mirror) does not serve, with what to set instead."""


def _hub_rows(path: str, name: str | None, split: str, reader: str, instead: str):
    """A hub dataset, or a local JSON/JSONL file (Commonsense170K's commonsense_170k.json).
    `reader` names what reads it and `instead` what to set when the hub does not serve it."""
    import datasets
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub import constants

    if Path(path).suffix in (".json", ".jsonl"):
        return datasets.load_dataset("json", data_files=str(path), split="train")
    try:
        return datasets.load_dataset(path, name, split=split)
    except DatasetNotFoundError as err:
        raise MissingDataset(
            f"{reader} reads the hub dataset {path}{f' (config {name})' if name else ''}, which {constants.ENDPOINT} "
            f"does not serve to this client ({err}). Check HF_ENDPOINT (a mirror must carry {path}) and HF_TOKEN for "
            f"a gated dataset; or {instead}") from err


def _task_rows(spec, split: str, scored: bool) -> list[dict]:
    instead = "set data_source: embedded (the embedded copies, no hub)"
    if not scored and spec.train_set == "commonsense170k":  # read only for the train set
        instead += (f"; or, since {spec.name} is not scored but read for the commonsense170k train set, set "
                    f"train_data.commonsense170k to LLM-Adapters' commonsense_170k.json (a local path or hub id)")
    reader = f"task {spec.name}" + ("" if scored else " (read for the commonsense170k train set)")
    return [spec.to_example(r) for r in _hub_rows(spec.hub.path, spec.hub.name, split, reader, instead)]


def _test_rows(spec, split, scored: bool) -> list[dict]:
    """Hub test rows; a task with several test splits (MNLI) tags each row with its subset."""
    if isinstance(split, str):
        return _task_rows(spec, split, scored)
    return [{**row, "subset": subset} for subset, s in split.items() for row in _task_rows(spec, s, scored)]


def prepare(task: str, source: str, split_cfg: dict, out: str | Path, raw: str | Path | None = None,
            val_rows: int = 0, scored: bool = True) -> dict:
    """Write <out>/train.jsonl, <out>/test.jsonl and <out>/split.json, and with val_rows
    <out>/val.jsonl (validation rows for a sweep's selection); returns the manifest. `scored`:
    whether the grid scores the task (else it is read for a train set: an error says so)."""
    import datasets

    spec = TASKS[task]
    if source == "embedded" and spec.packaged:
        train, test = [], [spec.to_example(r) for r in read_jsonl(packaged_path(spec.packaged))]
        how = f"shipped file lora_tsd/data/{spec.packaged} ({len(test)} rows), all held out"
    elif source == "embedded":
        examples = [spec.to_example(r) for r in datasets.load_from_disk(str(raw))]
        train, test = carve(examples, split_cfg["test_fraction"], split_cfg["salt"])
        how = (f"embedded validation split ({len(examples)} rows) carved by sha256(salt, example) "
               f"< {split_cfg['test_fraction']} -> test")
    else:
        hub = spec.hub
        train = [] if hub.train_split is None else _task_rows(spec, hub.train_split, scored)
        test = _test_rows(spec, hub.test_split, scored)
        how = f"hub {hub.path}/{hub.name}: {hub.train_split} -> train, {hub.test_split} -> test"
    files = {"train": train, "test": test}
    if val_rows:
        salt = split_cfg.get("salt") or ""
        if train:
            if val_rows >= len(train):
                raise ValueError(f"selection.val_rows {val_rows} leaves no training rows of {task} (its train side "
                                 f"has {len(train)}); allowed values: below {len(train)}")
            files["train"], files["val"] = hold_out(train, val_rows, salt)
            how += f"; {len(files['val'])} validation rows held out of the train side"
        else:  # every row is held out (IFEval): validation takes at most half of them
            files["test"], files["val"] = hold_out(test, min(val_rows, len(test) // 2), salt)
            how += f"; {len(files['val'])} validation rows held out of the test side (no train side)"
    manifest = {"task": task, "source": source, "salt": split_cfg.get("salt"), "how": how,
                **{f"n_{name}": len(rows) for name, rows in files.items()}}
    _write_rows(out, files, manifest)
    return manifest


def _write_rows(out: str | Path, files: dict[str, list[dict]], manifest: dict) -> None:
    with atomic.directory(out) as tmp:
        for name, rows in files.items():
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            (tmp / f"{name}.jsonl").write_text(text)
            manifest[f"sha256_{name}"] = hashlib.sha256(text.encode()).hexdigest()
        (tmp / "split.json").write_text(json.dumps(manifest, indent=2) + "\n")


def train_set_origin(name: str, source: str, hub_override: str | None = None) -> str:
    """Where a train set's rows come from: "tasks" (its tasks' train splits, which the workflow
    must prepare first), "packaged" (a file this package ships) or "hub" (a hub id or local JSON).
    A train_data entry (`hub_override`) is read whatever the data source (embedded: the test
    rows stay the embedded carve's); GLUE trains on its task's own split (the config check
    refuses a train_data entry for it)."""
    spec = TRAIN_SETS[name]
    if spec.family == "glue":
        return "tasks"
    if hub_override:
        return "hub"
    if source == "embedded":
        return "packaged" if spec.packaged else "tasks"
    return "hub" if spec.hub else "tasks"


def build_train_set(name: str, source: str, out: str | Path, task_dirs: dict[str, str | Path],
                    hub_override: str | None = None) -> dict:
    """Write <out>/train.jsonl in the train set's format: the hub id or local JSON the config
    names (`train_data`, with either data source; its rows checked first), else, embedded, the
    carved train splits of its tasks (commonsense rendered as Commonsense170K rows) or the
    shipped file, and, hub, the registry's default."""
    spec, origin = TRAIN_SETS[name], train_set_origin(name, source, hub_override)
    local = bool(hub_override) and Path(hub_override).suffix in train_files.SUFFIXES
    if spec.family == "glue":  # the task's own train split, already normalised
        rows = read_jsonl(Path(task_dirs[spec.tasks[0]]) / "train.jsonl")
        how = f"{spec.tasks[0]} train split"
    elif origin == "packaged":
        rows = read_jsonl(packaged_path(spec.packaged))
        how = f"shipped file lora_tsd/data/{spec.packaged}"
    elif origin == "tasks":
        rows = [{**commonsense_row(t, doc), "task": t}
                for t in spec.tasks for doc in read_jsonl(Path(task_dirs[t]) / "train.jsonl")]
        how = f"carved train splits of {', '.join(spec.tasks)} in the Commonsense170K format"
    else:
        where = hub_override or spec.hub
        if local:  # a JSON array or JSON Lines, as datasets' json loader reads them
            read = train_files.read_rows(where)
        else:
            read = list(_hub_rows(where, None, spec.hub_split, f"train set {name}",
                                  f"set train_data.{name} to a local JSON file or another hub id"))
        # Every row has the format's fields before anything is written (the file, the row and the field named).
        train_files.check_rows(read, f"train_data.{name}: {where}" + ("" if local else f" ({spec.hub_split} split)"))
        rows = [{k: r.get(k) or "" for k in ("instruction", "input", "output")} for r in read]
        how = f"{where} ({spec.hub_split} split)"
        rows, dropped = without_validation(rows, task_dirs) if spec.family == "commonsense" else (rows, 0)
        if dropped:
            how += f"; {dropped} rows dropped that render a validation row of {', '.join(sorted(task_dirs))}"
    if spec.template:  # the exact text trained on, visible in the file
        rows = [{**r, "prompt": prompts.TEMPLATES[spec.template](r), "response": r["output"]} for r in rows]
        how += f"; {spec.template} prompt template"
    manifest = {"train_set": name, "source": source, "how": how, "n_train": len(rows)}
    _write_rows(out, {"train": rows}, manifest)
    return manifest


def _words(text: str) -> str:
    return " ".join(str(text).split())


def without_validation(rows: list[dict], task_dirs: dict[str, str | Path]) -> tuple[list[dict], int]:
    """Commonsense170K rows less those whose instruction renders a task's validation row: the
    hub set was built from the tasks' train splits, where the validation rows come from."""
    held = {_words(commonsense_row(task, doc)["instruction"])
            for task, folder in task_dirs.items() if (Path(folder) / "val.jsonl").exists()
            for doc in read_jsonl(Path(folder) / "val.jsonl")}
    kept = [r for r in rows if _words(r["instruction"]) not in held]
    return kept, len(rows) - len(kept)


def commonsense_row(task: str, doc: dict) -> dict:
    """A commonsense task's stored row as an LLM-Adapters row {instruction, input, output, answer}."""
    spec = TASKS[task]
    question, options, gold = spec.item(doc)
    return prompts.commonsense_row(question, options, gold, spec.answer_style)


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
