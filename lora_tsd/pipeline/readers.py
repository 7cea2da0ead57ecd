"""Where every config key is read, and the start-up check that no key is silently dropped.

KEYS has an entry for every key of the config schema (tests/test_settings_read.py walks the schema
against it): where the key is read, and the settings in which nothing reads it. There it is
either refused at start-up (`refused`, checked by `problems`) or harmless (`inert` says why).

"Set" means a value other than the schema's default and the shipped config.yaml's (which the
Snakefile merges under every --configfile, so its values are in every grid): a key left at what
every grid starts from is not a user's setting, and is never refused.

Refused: a key that jobs of this grid could read but ignore (train_on_inputs on GLUE cells,
split.test_fraction under data_source: hub). Inert: a key for a kind of job the grid has none of
(a tsd option without its method, a sweep's selection without a sweep): nothing ignores it, and
it applies as soon as the grid has such a job, so a preset trimmed to fewer methods or tasks
still runs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from .. import models
from ..data.tasks import TASKS, TRAIN_SETS
from ..methods.registry import METHODS
from . import sweep
from .cells import cell_train

DEFAULTS = Path(__file__).resolve().parents[2] / "config.yaml"  # the checkout's; absent in a bare wheel


@dataclass(frozen=True)
class Key:
    read: str  # where it is read
    refused: str = ""  # the settings where nothing reads it, in which a set value stops the run
    inert: str = ""  # the settings where nothing reads it and why that is harmless (not refused)


ALL_CELLS = "every cell's training (lora_tsd/training)"
CAUSAL = "causal-LM train sets only (commonsense170k, alpaca); GLUE cells train an encoder"
SWEEP_ONLY = "a grid with a sweep (a sweep section naming a key)"
VACUOUS = ("a grid with none of the jobs that read it: nothing ignores it, and it applies as soon as the grid "
           "has one (a preset trimmed to fewer methods or tasks still runs)")

# Train keys: which cells read each (family, train set, method, the cell's merged train options),
# and in words. An external method's rule gets every train key (what it reads is its own).
Cell = tuple[str, str, str, dict]
TRAIN: dict[str, tuple[Callable[[Cell], bool], str]] = {
    "steps": (lambda c: True, ALL_CELLS + ": the run's length"),
    "epochs": (lambda c: True, ALL_CELLS + ": the run's length"),
    "batch_size": (lambda c: True, ALL_CELLS),
    "micro_batch_size": (lambda c: True, ALL_CELLS + " (speed only)"),
    "max_grad_norm": (lambda c: True, ALL_CELLS),
    "train_on_inputs": (lambda c: TRAIN_SETS[c[1]].format == "causal", CAUSAL),
    "keep_best": (lambda c: bool(c[3].get("val_size")), "cells with train.val_size > 0"),
    "warmup_ratio": (lambda c: True, ALL_CELLS),
    "val_size": (lambda c: True, ALL_CELLS),
    "analysis_every": (lambda c: True, ALL_CELLS),
    "eval_every": (lambda c: bool(c[3].get("val_size")), "cells with train.val_size > 0"),
    "val_batch_size": (lambda c: bool(c[3].get("val_size")), "cells with train.val_size > 0 (validation batches)"),
    "lr": (lambda c: True, ALL_CELLS),
    "warmup_steps": (lambda c: c[3].get("warmup_ratio") is None,
                     "cells without train.warmup_ratio (which replaces it)"),
    "weight_decay": (lambda c: True, ALL_CELLS),
    "max_length": (lambda c: True, ALL_CELLS),
    "lora_alpha_ratio": (lambda c: c[2] not in ("full", "vera"),
                         "adapter methods with a LoRA scaling (not full fine-tuning, not VeRA)"),
    "lora_dropout": (lambda c: c[2] != "full", "adapter methods (not full fine-tuning)"),
    "checkpoint_every": (lambda c: True, ALL_CELLS + " (resumable checkpoints)"),
    "base_dtype": (lambda c: TRAIN_SETS[c[1]].format == "causal", CAUSAL + " (encoders load in float32)"),
    "gradient_checkpointing": (lambda c: True, ALL_CELLS),
    "gpus": (lambda c: True, ALL_CELLS + " (processes per cell)"),
}


def _train_key(name: str) -> Key:
    return Key(f"train, then family_train, train_set_train, method_train and the sweeps: {TRAIN[name][1]}",
               refused="set in a section whose cells none reads: " + TRAIN[name][1],
               inert={"warmup_steps": "required by the schema, so a grid whose cells all have warmup_ratio "
                                      "still carries it",
                      "lora_alpha_ratio": "required by the schema, so a grid of full fine-tuning and VeRA still "
                                          "carries it",
                      "lora_dropout": "required by the schema, so a grid of full fine-tuning still carries it"
                      }.get(name, ""))


def _tsd_key(name: str) -> Key:
    readers = [m for m, spec in METHODS.items() if name in spec.tsd_options]
    return Key(f"the methods whose Method.tsd_options name it: {', '.join(readers)}", inert=VACUOUS)


KEYS: dict[str, Key] = {
    "name": Key("the grid's folder results/<name>/ (workflow/rules/common.smk GRID)"),
    "models": Key("every grid: the model dimension"),
    "model_kinds": Key("models.kind: a hub model's or local folder's kind"),
    "model_kinds.*": Key("models.kind, for hub models and local folders",
                         refused="an embedded model with a kind other than its own (it knows its kind)",
                         inert="an embedded model's own kind, declared again: the same kind either way"),
    "target_modules": Key("models.target_modules: each model's adapted modules"),
    "target_modules.*": Key("models.target_modules, for every adapter method", inert=VACUOUS),
    "tasks": Key("every grid: the task dimension"),
    "train_data": Key("prepare.build_train_set: the named train sets' rows, with either data source "
                      "(lora_tsd/pipeline/config.py checks the entries)"),
    "train_data.*": Key("prepare.build_train_set, with either data source",
                        refused="GLUE's train sets (always their task's own split; lora_tsd/pipeline/config.py)",
                        inert="a train set no task of the grid trains on: " + VACUOUS),
    "methods": Key("every grid: the method dimension"),
    "external_methods": Key("workflow/rules/common.smk EXTERNAL and the baseline rules"),
    "external_methods.*": Key("a baseline trained by its own rule: its entry, by method name"),
    "external_methods.*.rule": Key("producer_rule and the contract check: the rule that writes the cell"),
    "external_methods.*.smk": Key("the Snakefile, which includes the file"),
    "external_methods.*.description": Key("nobody: a note for people reading the config",
                                          inert="always; it describes the baseline and changes nothing"),
    "external_methods.*.options": Key("the baseline's rule, as its params (workflow/rules/baselines/)"),
    "ranks": Key("every adapter method's cells (the rank dimension)",
                 inert="full fine-tuning has no rank: it trains once, under the smallest rank's folder "
                       "(docs/configuration.md, methods)"),
    "seeds": Key("every grid: the seed dimension"),
    "exact": Key("kernels.pin, in every job that runs torch (train, evaluate, forgetting, the stages)"),
    "data_source": Key("prepare.prepare and build_train_set: where task data comes from"),
    "split": Key("prepare.prepare, and the data key of resources/data/<key>/"),
    "split.test_fraction": Key("prepare.prepare: the embedded carve's test share",
                               refused="data_source: hub (the hub's own splits)",
                               inert="a grid whose only task ships its rows (ifeval): all are held out"),
    "split.salt": Key("prepare.prepare: the embedded carve and a sweep's validation rows",
                      refused="data_source: hub without a sweep (no carve, no validation rows)"),
    "train": Key("pipeline.cells.cell_train: every cell's options (the keys below)"),
    **{f"train.{k}": _train_key(k) for k in TRAIN},
    **{f"{section}{star}": Key(f"pipeline.cells.cell_train: train keys (as train.<key>) for a {what}'s cells",
                               refused="a key none of its cells reads",
                               inert="an entry whose " + what + " has no cell in the grid: " + VACUOUS)
       for section, what in (("family_train", "family"), ("train_set_train", "train set"), ("method_train", "method"))
       for star in ("", ".*")},
    "sweep": Key("pipeline.sweep: candidates for every cell"),
    "sweep.*": Key("pipeline.sweep: a key's candidates (train keys, tsd.<key>)",
                   refused="a train key no cell reads; a tsd key no method of the grid reads (sweep_checks)"),
    **{f"{section}{star}": Key(f"pipeline.sweep: a {what}'s candidates",
                               refused="an entry that reaches no cell (sweep_checks), a key none of its cells reads")
       for section, what in (("family_sweep", "family"), ("method_sweep", "method")) for star in ("", ".*", ".*.*")},
    "selection": Key("rule select: how a sweep picks each method's setting", inert=VACUOUS),
    "selection.select_by": Key("aggregate.selection and the validate rule", inert=VACUOUS),
    "selection.val_rows": Key("prepare.prepare: a sweep's validation rows per task", inert=VACUOUS),
    "selection.metric": Key("aggregate.selection with select_by score",
                            refused="select_by: loss (the sweep compares losses, not scores)", inert=VACUOUS),
    "selection.metric.*": Key("aggregate.selection: a family's metric",
                              refused="as selection.metric", inert="a family with no task in the grid: " + VACUOUS),
    "tsd": Key("the TSD methods' hooks (methods/dash.py, methods/lora_init.py), through each method's "
               "Method.tsd_options"),
    **{f"tsd.{k}": _tsd_key(k) for k in ("dash_t", "dash_t_unit", "dash_s", "svd_dtype", "init_estimate",
                                         "init_steps", "init_scale", "init_residualise")},
    "tsd.svd_cache": Key("the workflow (workflow/scripts/train.py): where the methods that read weight SVDs "
                         "keep them",
                         inert="a grid without such methods: it only says where SVDs are kept, never a result"),
    "eval": Key("evaluation.scoring: every evaluation job"),
    "eval.limit": Key("evaluation.scoring: every task's test rows"),
    "eval.batch_size": Key("evaluation.scoring: every protocol (a result: a batch's padding rounds in bf16)"),
    "eval.protocols": Key("workflow/rules/evaluate.smk and evaluation.scoring",
                          inert="an entry no task of the grid is scored with: " + VACUOUS),
    "eval.num_beams": Key("the generative protocol", inert=VACUOUS),
    "eval.max_gen_toks": Key("the generative protocol", inert=VACUOUS),
    "eval.ifeval_max_gen_toks": Key("the ifeval protocol", inert=VACUOUS),
    "eval.dtype": Key("evaluation.scoring and forgetting: causal LMs (encoders score in float32)",
                      refused="a grid without a causal model"),
    "forgetting": Key("workflow/rules/forgetting.smk and evaluation.forgetting: the causal models' cells"),
    "forgetting.enabled": Key("workflow/rules/forgetting.smk",
                              inert="a grid without a causal model: no forgetting jobs either way"),
    **{f"forgetting.{k}": Key("data.general_text and evaluation.forgetting",
                              inert="forgetting.enabled: false, or a grid without a causal model: " + VACUOUS)
       for k in ("text", "rows", "max_length")},
    **{f"forgetting.text.{k}": Key("data.general_text: a hub slice's coordinates",
                                   inert="as forgetting.text") for k in ("dataset", "config", "split", "field")},
    "reference": Key("rule compare (workflow/rules/aggregate.smk): the published file a run is compared with",
                     inert="every run but snakemake compare: it names a file to compare with, never a result"),
    "cluster": Key("pipeline.sizing, from workflow/rules/resources.smk: every job's resources"),
    **{f"cluster.{k}": Key("pipeline.sizing: job resources",
                           inert="a run without a scheduler: the local executor enforces no time or memory "
                                 "limit; sizing never changes a result")
       for k in ("tflops", "startup_min", "max_runtime", "mem_overhead_mb", "model_params", "model_params.*")},
}


def schema_keys(schema: dict, prefix: str = "") -> list[str]:
    """Every key path of a schema: 'train.lr', 'family_train.*' (a map's entries, '*' for their
    names), 'external_methods.*.rule'."""
    out = []
    for name, spec in (schema.get("properties") or {}).items():
        path = f"{prefix}{name}"
        out += [path] + schema_keys(spec, path + ".")
        out += _entries(spec, path)
    return out


def _entries(spec: dict, path: str) -> list[str]:
    extra = spec.get("additionalProperties")
    if not isinstance(extra, dict):
        return []
    return [path + ".*"] + schema_keys(extra, path + ".*.") + _entries(extra, path + ".*")


# -- the checks ---------------------------------------------------------------------------------

def _defaults(path: Path | None) -> dict:
    return yaml.safe_load(path.read_text()) if path and path.is_file() else {}


def _get(tree, parts):
    for part in parts:
        if not isinstance(tree, dict) or part not in tree:
            return _MISSING
        tree = tree[part]
    return tree


_MISSING = object()


def _unchanged(value, where: tuple, schema_default, defaults: dict) -> bool:
    """A value every grid starts from: the schema's default, config.yaml's at the same place, or
    null for an optional key without a default."""
    if value is None and schema_default is _MISSING:
        return True
    return value == schema_default or value == _get(defaults, where)


def _cells(config: dict) -> list[Cell]:
    known = {**METHODS, **(config.get("external_methods") or {})}
    sets = dict.fromkeys((TASKS[t].family, TASKS[t].train_set) for t in config.get("tasks", []) if t in TASKS)
    return [(f, ts, m, cell_train(config, f, ts, m)) for f, ts in sets for m in config.get("methods", [])
            if m in known]


def _reads(key: str, cell: Cell) -> bool:
    return cell[2] not in METHODS or TRAIN[key][0](cell)  # an external rule: its own business


def _train_sections(config: dict):
    """(config key, cells it reaches, its train keys, a sweep) of every place train keys are given."""
    yield "train", lambda c: True, config.get("train") or {}, False
    for section, index in (("family_train", 0), ("train_set_train", 1), ("method_train", 2)):
        for name, keys in (config.get(section) or {}).items():
            yield f"{section}.{name}", (lambda c, n=name, i=index: c[i] == n), keys or {}, False
    yield "sweep", lambda c: True, config.get("sweep") or {}, True
    for section, index in (("family_sweep", 0), ("method_sweep", 2)):
        for name, keys in (config.get(section) or {}).items():
            yield f"{section}.{name}", (lambda c, n=name, i=index: c[i] == n), keys or {}, True


def _train_problems(config: dict, train_schema: dict, defaults: dict) -> list[str]:
    problems, cells = [], _cells(config)
    for where, reaches, keys, swept in _train_sections(config):
        reached = [c for c in cells if reaches(c)]
        for key, value in keys.items():
            if key not in TRAIN or (where == "train" and key in ("keep_best", "eval_every")):
                continue  # not a train key (the schema and sweep checks name it), or config.py's own check
            default = train_schema["properties"][key].get("default", _MISSING)
            if not swept and _unchanged(value, _path(where, key), default, defaults):
                continue
            shown = value if swept else sweep.fmt(value)
            if not reached:
                continue  # inert: applies once the grid has such a cell (a sweep's: sweep_checks names it)
            if not any(_reads(key, c) for c in reached):
                required = where == "train" and key in train_schema.get("required", [])
                problems.append(f"config key '{where}.{key}': {shown}, but none of the cells it reaches "
                                f"({_names(reached)}) reads {key}: it is read by {TRAIN[key][1]}; allowed values: "
                                f"{_left_out(default, where, key, defaults, required)}")
    return problems


def _names(cells: list[Cell]) -> str:
    return (f"{', '.join(dict.fromkeys(c[2] for c in cells))} on "
            f"{', '.join(dict.fromkeys(c[1] for c in cells))}")


def _path(where: str, key: str) -> tuple:
    return (*where.split(".", 1), key)


def _left_out(default, where: str, key: str, defaults: dict, required: bool = False) -> str:
    """What a refused key may be instead: the value every grid starts from, or no value."""
    base = _get(defaults, _path(where, key))
    choices = [f"{sweep.fmt(default)} (the default)"] if default is not _MISSING else []
    if base is not _MISSING and base != default:
        choices.append(f"{sweep.fmt(base)} (config.yaml's)")
    if not required:
        choices.append(f"no {key} in {where}")
    return " or ".join(choices) or "the value config.yaml gives"


def _set(config: dict, schema: dict, defaults: dict, section: str, key: str) -> bool:
    value = (config.get(section) or {}).get(key, _MISSING)
    if value is _MISSING:
        return False
    default = schema["properties"][section]["properties"][key].get("default", _MISSING)
    return not _unchanged(value, (section, key), default, defaults)


def _refusal(section: str, key: str, config: dict, why: str, schema: dict, defaults: dict) -> str:
    value = config[section][key]
    spec = schema["properties"][section]
    default = spec["properties"][key].get("default", _MISSING)
    return (f"config key '{section}.{key}': {sweep.fmt(value) if not isinstance(value, dict) else value}, but {why}; "
            f"allowed values: {_left_out(default, section, key, defaults, key in spec.get('required', []))}")


def _section_problems(config: dict, schema: dict, defaults: dict) -> list[str]:
    causal = [m for m in config.get("models", []) if models.kind(m, config.get("model_kinds")) == "causal"]
    problems = []

    def refuse(section, key, why):
        if _set(config, schema, defaults, section, key):
            problems.append(_refusal(section, key, config, why, schema, defaults))

    if not causal:
        refuse("eval", "dtype", "this grid has no causal model (encoders score in float32)")
    if sweep.active(config) and (config.get("selection") or {}).get("select_by") == "loss":
        refuse("selection", "metric", "selection.select_by is loss: selection compares validation losses, "
                                      "not scores")
    if config.get("data_source") == "hub":
        refuse("split", "test_fraction", "data_source is hub: the test rows are the hub's test splits, no carve")
        if not sweep.active(config):
            refuse("split", "salt", "data_source is hub and the grid has no sweep: no carve and no validation "
                                    "rows to draw")
    for name, declared in (config.get("model_kinds") or {}).items():
        if name in models.EMBEDDED_MODELS and declared != models.EMBEDDED_MODELS[name].kind:
            problems.append(f"config key 'model_kinds.{name}': {declared!r}, but {name} is an embedded "
                            f"{models.EMBEDDED_MODELS[name].kind} model and knows its kind; allowed values: "
                            f"{models.EMBEDDED_MODELS[name].kind}, or no entry")
    return problems


def problems(config: dict, schema: dict, defaults: Path | None = DEFAULTS) -> list[str]:
    """Every key set where no cell of the grid reads it (see KEYS), with the key, the value and
    what is allowed. `defaults`: the config every --configfile is merged over."""
    base = _defaults(defaults)
    return (_train_problems(config, schema["properties"]["train"], base)
            + _section_problems(config, schema, base))

