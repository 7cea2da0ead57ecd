"""The run-folder contract: what a cell's training must leave for evaluation and the tables,
whichever rule trained it (the built-in `train`, or an external baseline's own rule):
- `adapter/`: a peft adapter (adapter_config.json and adapter_model.safetensors or .bin), or a
  full model folder (config.json and its weights);
- `train.json`: the fields of workflow/schemas/train.schema.yaml, naming this cell;
- optionally `tsd_analysis.npz`.
`check_run` is called by the evaluate rule before scoring; its errors name the field and the
rule that produced the folder."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

SCHEMA = Path(__file__).resolve().parent / "schemas" / "train.schema.yaml"
PEFT_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
FULL_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")


class ContractError(ValueError):
    pass


def adapter_problems(adapter: Path) -> list[str]:
    if not adapter.is_dir():
        return [f"adapter/: missing ({adapter} is not a folder)"]
    names = {p.name for p in adapter.iterdir()}
    if "adapter_config.json" in names:
        if not names & set(PEFT_WEIGHTS):
            return [f"adapter/: a peft adapter_config.json without weights (one of {', '.join(PEFT_WEIGHTS)})"]
        return []
    if "config.json" in names and names & set(FULL_WEIGHTS):
        return []
    return [f"adapter/: neither a peft adapter (adapter_config.json + {' or '.join(PEFT_WEIGHTS)}) nor a full "
            f"model (config.json + weights); found {sorted(names) or 'nothing'}"]


def record_problems(record, expected: dict) -> list[str]:
    schema = yaml.safe_load(SCHEMA.read_text())
    problems = []
    for err in sorted(jsonschema.Draft202012Validator(schema).iter_errors(record), key=lambda e: list(e.path)):
        if err.validator == "anyOf":  # name the alternatives, not "not valid under any of the given schemas"
            names = [n for alt in err.validator_value for n in alt.get("required", [])]
            problems.append(f"train.json field '{' or '.join(names)}': missing (one of them is required)")
            continue
        where = ".".join(map(str, err.absolute_path)) or "<top level>"
        problems.append(f"train.json field '{where}': {err.message}")
    if isinstance(record, dict):
        for key, want in expected.items():
            if key in record and record[key] != want:
                problems.append(f"train.json field '{key}': {record[key]!r}, but this cell's is {want!r}")
    return problems


def check_run(run_dir: str | Path, expected: dict, producer: str) -> dict:
    """The cell's train.json, once the folder meets the contract; else ContractError listing
    every problem, with the rule that wrote the folder."""
    run_dir = Path(run_dir)
    problems = adapter_problems(run_dir / "adapter")
    path = run_dir / "train.json"
    record = None
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        problems.append("train.json: missing")
    except json.JSONDecodeError as err:
        problems.append(f"train.json: not JSON ({err})")
    if record is not None:
        problems += record_problems(record, expected)
    if problems:
        raise ContractError(f"{run_dir} does not meet the run-folder contract (written by rule '{producer}'; "
                            f"schema: {SCHEMA.relative_to(SCHEMA.parents[3])}):\n  " + "\n  ".join(problems))
    return record


def check_cell(adapter: str | Path, model_name: str, wildcards, producer: str) -> dict:
    """The train record of the cell whose adapter a job reads (evaluation, forgetting), once its
    folder meets the contract, whichever rule trained it (built in or an external baseline)."""
    expected = {"model": model_name, "train_set": wildcards.train_set, "method": wildcards.method,
                "rank": int(wildcards.rank), "seed": int(wildcards.seed)}
    return check_run(Path(adapter).parent, expected, producer)
