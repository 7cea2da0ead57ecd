"""Config checks that run before any job: every error names the key, the bad value and
what is allowed."""
from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml

from .. import models, provenance
from ..data import train_files
from ..data.general_text import TEXTS
from ..data.tasks import FAMILIES, TASKS, TRAIN_SETS
from ..methods.registry import METHODS
from ..training.checkpoint import RESULT_NEUTRAL, result_train  # noqa: F401  (the workflow reads both here)
from . import readers, shapes, sweep_checks
from .messages import key_path as _key
from .messages import unknown as _unknown
from .cells import LENGTH_KEYS, OVERRIDES, cell_train, merge_train  # noqa: F401  (read here by the workflow)

SCHEMA = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    pass


def result_eval(eval_cfg: dict) -> dict:
    """eval options that can change a score: all of them. batch_size too: in bf16, a batch's
    padding moves the logits by rounding (one IFEval prompt of 60 flipped between 16 and 64)."""
    return dict(eval_cfg)


def result_tsd(tsd_cfg: dict) -> dict:
    """tsd options that can change a result (svd_cache is where SVDs are kept). dash_t_unit
    is left out at its default (step), so grids from before the option keep their params,
    checkpoints and stamps; the methods read a missing one as step."""
    return {k: v for k, v in tsd_cfg.items() if k != "svd_cache" and not (k == "dash_t_unit" and v == "step")}


def result_config(config: dict) -> dict:
    """The config less what cannot change a result (RESULT_NEUTRAL train keys in every section,
    where SVDs are kept, job sizing): what the tables are stamped with."""
    out = {k: v for k, v in config.items() if k not in ("cluster", "reference")}  # job sizing; a file to compare with
    out["train"] = result_train(config.get("train", {}))
    for section in OVERRIDES:
        out[section] = {name: result_train(v) for name, v in (config.get(section) or {}).items()}
    out["eval"] = result_eval(config.get("eval", {}))
    out["tsd"] = result_tsd(config.get("tsd", {}))
    return out


def forgetting_options(config: dict) -> dict:
    """The `forgetting` section with the schema's defaults filled in."""
    keys = yaml.safe_load(SCHEMA.read_text())["properties"]["forgetting"]["properties"]
    given = config.get("forgetting") or {}
    return {key: given.get(key, spec.get("default")) for key, spec in keys.items()}


def _forgetting_problems(config: dict) -> list[str]:
    """An embedded text is named by one of TEXTS and has the rows asked for (a hub slice's
    shape is the schema's to check; its row count is known once it is read)."""
    section = config.get("forgetting")
    if not isinstance(section, dict):
        return []
    text, rows = section.get("text", "mtbench-reference"), section.get("rows")
    if isinstance(text, str) and text not in TEXTS:
        return [f"config key 'forgetting.text': unknown value {text!r}; allowed values: {', '.join(sorted(TEXTS))}, "
                f"or a hub slice {{dataset, config, split, field}}"]
    if isinstance(text, str) and isinstance(rows, int) and not isinstance(rows, bool) and rows > TEXTS[text].rows:
        return [f"config key 'forgetting.rows': {rows} rows of {text}, which has {TEXTS[text].rows}; "
                f"allowed values: 1 to {TEXTS[text].rows}"]
    return []


def short_hash(obj) -> str:
    """8 hex digits naming a setting in a folder name (the same setting, the same name)."""
    return provenance.config_hash(obj)[:8]


def local_path(value: str) -> bool:
    """A config value that names a file on disk rather than a hub id."""
    return Path(value).suffix in (".json", ".jsonl", ".parquet", ".csv") or value.startswith((".", "/", "~"))


def _schema_problems(config: dict, schema: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"config key '{_key(e.absolute_path)}': {e.message}"
        for e in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    ]


def known_methods(config: dict) -> dict:
    """Built-in methods and the config's external ones (name -> registry entry or declaration)."""
    external = config.get("external_methods") or {}
    return {**METHODS, **(external if isinstance(external, dict) else {})}


def _external_problems(config: dict) -> list[str]:
    problems = []
    for name, spec in (config.get("external_methods") or {}).items():
        if name in METHODS:
            problems.append(f"config key 'external_methods.{name}': {name!r} is a built-in method; allowed values: "
                            f"a name not among {', '.join(sorted(METHODS))}")
        smk = (spec or {}).get("smk") if isinstance(spec, dict) else None
        if smk and not Path(smk).expanduser().is_file():
            problems.append(f"config key 'external_methods.{name}.smk': file {smk!r} does not exist (relative paths "
                            f"are read from {Path.cwd()}); allowed values: an existing Snakemake file")
    return problems


def _registry_problems(config: dict, schema: dict) -> list[str]:
    problems = _external_problems(config)
    known = known_methods(config)
    for i, name in enumerate(config.get("methods", [])):
        if name not in known:
            problems.append(_unknown(f"methods[{i}]", name, sorted(known)))
    train_keys = set(schema["properties"]["train"]["properties"])
    for section, registry in (("method_train", known), ("family_train", FAMILIES),
                              ("train_set_train", TRAIN_SETS)):
        for name, overrides in (config.get(section) or {}).items():
            if name not in registry:
                problems.append(_unknown(f"{section}.{name}", name, sorted(registry)))
            for key in overrides if isinstance(overrides, dict) else []:
                if key not in train_keys:
                    problems.append(_unknown(f"{section}.{name}.{key}", key, sorted(train_keys)))
    problems += _train_data_problems(config)
    embedded = config.get("data_source", "embedded") == "embedded"
    for i, name in enumerate(config.get("tasks", [])):
        if name not in TASKS:
            problems.append(_unknown(f"tasks[{i}]", name, sorted(TASKS)))
        elif embedded and not (TASKS[name].embedded or TASKS[name].packaged):
            offline = sorted(n for n, t in TASKS.items() if t.embedded or t.packaged)
            problems.append(f"config key 'tasks[{i}]': {name!r} has no embedded copy (data_source: embedded); "
                            f"allowed values offline: {', '.join(offline)}; or set data_source: hub")
    listed = config.get("models", [])
    for i, name in enumerate(listed):
        if not (name in models.EMBEDDED_MODELS or models.is_hub_id(name)):
            allowed = sorted(models.EMBEDDED_MODELS) + ["a hub id such as 'org/name'"]
            problems.append(_unknown(f"models[{i}]", name, allowed))
        elif local_path(name) and not Path(name).expanduser().is_dir():
            problems.append(f"config key 'models[{i}]': local model folder {name!r} does not exist; allowed "
                            f"values: an existing folder, an embedded name or a hub id such as 'org/name'")
    for section in ("model_kinds", "target_modules", "cluster.model_params"):
        entries = config
        for part in section.split("."):
            entries = (entries or {}).get(part) if isinstance(entries, dict) else None
        for name in entries or {}:
            if name not in listed:
                problems.append(_unknown(f"{section}.{name}", name, listed))
    return problems + _kind_problems(config)


def _train_data_problems(config: dict) -> list[str]:
    """Each train_data entry is read (with either data source): a train set of the grid's tasks
    that rows can replace (not GLUE's, always its task's own split), and a local file that
    exists, parses and has the format's fields in every row (a hub id's rows: at the data job).
    An entry for a train set no task of the grid uses is inert, as readers.py's keys are."""
    problems = []
    used = sorted({TASKS[t].train_set for t in config.get("tasks", []) if t in TASKS})
    replaceable = sorted(n for n, ts in TRAIN_SETS.items() if ts.family != "glue")
    for name, value in (config.get("train_data") or {}).items():
        key = f"config key 'train_data.{name}'"
        if name not in TRAIN_SETS:
            problems.append(_unknown(f"train_data.{name}", name, sorted(TRAIN_SETS)))
        elif TRAIN_SETS[name].family == "glue":
            problems.append(f"{key}: {value!r} for GLUE's {name}, which always trains on its task's own train "
                            f"split (the embedded carve's, or the hub's); allowed keys: {', '.join(replaceable)}")
        elif name not in used:
            continue  # inert: no cell of this grid trains on it (read once one does: readers.py)
        elif isinstance(value, str) and local_path(value):
            if not Path(value).expanduser().is_file():
                problems.append(f"{key}: local file {value!r} does not exist (relative paths are read from "
                                f"{Path.cwd()}); allowed values: an existing JSON/JSONL file, or a hub id such as "
                                f"'org/name'")
            elif problem := train_files.file_problem(value):
                problems.append(f"{key}: {problem}")
    return problems


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _kind_problems(config: dict) -> list[str]:
    """Each model meets the tasks of its kind; a task no listed model can run (GLUE without an
    encoder, IFEval with only encoders), or a model no task can use, is an error."""
    listed = [m for m in config.get("models", []) if m in models.EMBEDDED_MODELS or models.is_hub_id(m)]
    kinds = {m: models.kind(m, config.get("model_kinds")) for m in listed}
    tasks = [t for t in config.get("tasks", []) if t in TASKS]
    problems = []
    for i, task in enumerate(config.get("tasks", [])):
        if task in TASKS and listed and TASKS[task].model_kind not in kinds.values():
            need = TASKS[task].model_kind
            problems.append(
                f"config key 'tasks[{i}]': task {task!r} ({TASKS[task].family}) needs {_a(need)} model, but "
                f"the models are {', '.join(f'{m} ({k})' for m, k in kinds.items())}; add {_a(need)} model "
                f"(hub ids: declare it under model_kinds) or drop the task")
    for i, model in enumerate(config.get("models", [])):
        if model in kinds and tasks and kinds[model] not in {TASKS[t].model_kind for t in tasks}:
            fits = sorted(n for n, t in TASKS.items() if t.model_kind == kinds[model])
            problems.append(f"config key 'models[{i}]': {model!r} is {_a(kinds[model])} model but no listed task "
                            f"needs one; tasks for {kinds[model]} models: {', '.join(fits)}")
    return problems


def _length_problems(config: dict) -> list[str]:
    """Every cell's run length is given exactly once, as steps or as epochs."""
    train = config.get("train") or {}
    if not isinstance(train, dict):
        return []
    given = [k for k in LENGTH_KEYS if train.get(k) is not None]
    if len(given) == 1:
        return []
    what = "neither" if not given else "both"
    return [f"config key 'train': {what} of steps and epochs given; allowed values: exactly one of "
            f"train.steps (optimizer steps) or train.epochs (passes over the train set), the other null "
            f"(a --configfile merges into config.yaml's steps: set steps: null there to count epochs)"]


def _consistency_problems(config: dict) -> list[str]:
    problems = []
    train = config.get("train", {})
    for key in ("eval_every", "keep_best"):
        if train.get(key) and not train.get("val_size"):
            problems.append(f"config key 'train.{key}': {train[key]} needs held-out rows; "
                            f"allowed values: null/false, or set train.val_size > 0")
    for method in config.get("methods", []):
        cell = merge_train(train, (config.get("method_train") or {}).get(method, {}))
        if method in METHODS and METHODS[method].trains_weights and cell.get("base_dtype") == "bfloat16":
            problems.append(f"config key 'train.base_dtype': 'bfloat16' for method {method!r}, which trains every "
                            f"weight (AdamW on bf16 weights loses small updates); allowed values: auto, float32 "
                            f"(set method_train.{method}.base_dtype)")
        if isinstance(cell.get("gpus"), int) and isinstance(cell.get("batch_size"), int) \
                and cell["gpus"] > cell["batch_size"]:
            problems.append(f"config key 'train.gpus': {cell['gpus']} processes for batches of {cell['batch_size']} "
                            f"rows ({method}); allowed values: 1 to train.batch_size")
    dashing = {m for m in config.get("methods", []) if m in METHODS and METHODS[m].switches}
    steps, tsd_cfg = train.get("steps"), config.get("tsd", {})
    t = tsd_cfg.get("dash_t", 100)
    limit = sweep_checks.switch_limit(train, tsd_cfg) if dashing and isinstance(t, (int, float)) and t >= 1 else None
    if limit is not None and t >= limit:
        counted = (f"the {limit} forward calls up to train.steps ({steps}) (tsd.dash_t_unit: forward)"
                   if tsd_cfg.get("dash_t_unit") == "forward" else f"train.steps ({steps})")
        problems.append(
            f"config key 'tsd.dash_t': {t} is not below {counted}, so {sorted(dashing)} would "
            f"never switch; allowed values: 0 <= dash_t < {limit}, or a fraction below 1"
        )
    return problems


def _override_problems(config: dict, schema: dict) -> list[str]:
    """Each override section's entries, merged over `train`, must still satisfy the schema."""
    problems = []
    train_schema = schema["properties"]["train"]
    for section in OVERRIDES:
        for name, overrides in (config.get(section) or {}).items():
            if isinstance(overrides, dict) and isinstance(config.get("train"), dict):
                merged = merge_train(config["train"], overrides)
                for e in jsonschema.Draft202012Validator(train_schema).iter_errors(merged):
                    problems.append(f"config key '{section}.{name}.{_key(e.absolute_path)}': {e.message}")
    return problems


def external_rule_problems(config: dict, rules: dict, run_of) -> list[str]:
    """Once every rule file is read: each external method's rule exists and writes the
    contract's files for its method (`rules`: rule name -> its output patterns; `run_of(name)`:
    the method's cell-folder pattern, the workflow's external_run)."""
    problems = []
    for name, spec in (config.get("external_methods") or {}).items():
        rule = spec["rule"]
        if rule not in rules:
            problems.append(_unknown(f"external_methods.{name}.rule", rule, sorted(rules)))
            continue
        run = run_of(name)
        missing = [f for f in (f"{run}/adapter", f"{run}/train.json") if f not in rules[rule]]
        if missing:
            problems.append(f"config key 'external_methods.{name}.rule': rule {rule!r} does not write "
                            f"{', '.join(missing)}; allowed values: a rule whose output is the run-folder contract "
                            f"(use external_run({name!r}) in its output)")
    return problems


def check(config: dict, schema_path: str | Path = SCHEMA, defaults: str | Path | None = readers.DEFAULTS) -> None:
    """Raise ConfigError listing every problem; return None when the config is usable.
    `defaults`: the config every --configfile is merged over (config.yaml): a key left at its
    value is never refused as unread (lora_tsd/pipeline/readers.py)."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    problems = (_schema_problems(config, schema) + _length_problems(config) + _registry_problems(config, schema)
                + _override_problems(config, schema) + _forgetting_problems(config))
    if not problems:
        problems = sweep_checks.problems(config, schema, known_methods(config))
    if not problems:  # keys no cell reads; ranks and dash_s against the models' matrices
        problems = (_consistency_problems(config) + readers.problems(config, schema, defaults and Path(defaults))
                    + shapes.problems(config))
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def load(path: str | Path) -> dict:
    return yaml.safe_load(Path(path).read_text())
