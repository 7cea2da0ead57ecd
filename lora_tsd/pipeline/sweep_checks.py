"""Start-up checks of the sweep and selection sections: every entry reaches a cell, every
candidate is a valid setting for every cell it reaches, no train section is silently
overridden, and the selection can read what it needs. Each problem names the key, the bad
value and what is allowed."""
from __future__ import annotations

import jsonschema

from ..data.tasks import FAMILIES, TASKS, TRAIN_SETS
from ..methods.registry import METHODS
from ..training.checkpoint import RESULT_NEUTRAL
from ..training.loop import forward_count
from . import sweep
from .cells import cell_train, merge_train
from .messages import key_path, unknown

# Fractions below 1 mean "share of the run" (tsd.dash_t, tsd.init_steps): a factor may not cross 1.
FRACTION_KEYS = ("tsd.dash_t", "tsd.init_steps")
# Keys that change what a validation loss measures: candidates differing in them are not comparable.
LOSS_BASIS = ("val_size", "max_length", "train_on_inputs")
# Keys a method's stage (EVA's) does not read: the only ones its candidates may differ in.
STAGE_FREE = ("lr", "warmup_steps", "warmup_ratio", "weight_decay", "max_grad_norm", "lora_dropout", "steps",
              "epochs", "keep_best", "eval_every")
# How specific each section is; a train section may not fix a swept key more specifically
# than the sweep that gives it candidates (its value would silently replace every candidate's).
SWEEP_LEVEL = {"sweep": 0, "family_sweep": 1, "method_sweep": 3}
TRAIN_LEVEL = {"family_train": 1, "train_set_train": 2, "method_train": 3}
# Metric names per protocol, for selection.metric.
METRICS = {"loglik": ("acc", "acc_norm"), "generative": ("acc",),
           "ifeval": ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc",
                      "inst_level_loose_acc"),
           "glue": ("accuracy", "f1", "matthews_correlation", "pearson", "spearmanr")}


def switch_limit(train: dict, tsd_cfg: dict) -> int | None:
    """The smallest whole dash_t (>= 1) with which LoRA-Dash would never switch before the
    end of a run of train.steps steps (None when the run is counted in epochs): the steps, or
    under tsd.dash_t_unit: forward the forward calls up to the last step's (batch_size rows a
    batch; methods.dash.switch_step)."""
    steps = train.get("steps")
    if not isinstance(steps, int) or isinstance(steps, bool):
        return None
    if tsd_cfg.get("dash_t_unit", "step") != "forward":
        return steps
    return forward_count(train, train["batch_size"], train.get("val_size") or 0).through(steps)


def grid_cells(config: dict, known: dict) -> list[tuple[str, str, str]]:
    """(family, train set, method) of every trained cell the grid has (valid names only)."""
    sets = dict.fromkeys((TASKS[t].family, TASKS[t].train_set) for t in config.get("tasks", []) if t in TASKS)
    return [(f, ts, m) for f, ts in sets for m in config.get("methods", []) if m in known]


def _entries(config: dict) -> list[tuple[str, str | None, str | None, dict]]:
    """(config key, family, method, {key: candidates}) of every sweep entry."""
    out = [("sweep", None, None, config.get("sweep") or {})]
    out += [(f"family_sweep.{f}", f, None, keys or {}) for f, keys in (config.get("family_sweep") or {}).items()]
    out += [(f"method_sweep.{m}", None, m, keys or {}) for m, keys in (config.get("method_sweep") or {}).items()]
    return out


def _path(section: str, family: str, method: str, key: str) -> str:
    """Where a key's candidates are given, as a config key."""
    return {"sweep": f"sweep.{key}", "family_sweep": f"family_sweep.{family}.{key}",
            "method_sweep": f"method_sweep.{method}.{key}"}[section]


def _conflicts(config: dict, family: str, train_set: str, method: str) -> list[str]:
    """Train sections that fix a swept key for this cell more specifically than its candidates'
    section: the sweep would silently replace that value (give candidates at that level)."""
    names = {"family_train": family, "train_set_train": train_set, "method_train": method}
    problems = []
    for key, (section, values) in sweep.candidates(config, family, method).items():
        if all(map(sweep.is_factor, values)):
            continue  # factors scale the fixed value instead of replacing it
        for train_section, level in TRAIN_LEVEL.items():
            fixed = (config.get(train_section) or {}).get(names[train_section]) or {}
            if key in fixed and level > SWEEP_LEVEL[section]:
                own = f"method_sweep.{method}.{key}" if level > 1 else f"family_sweep.{family}.{key}"
                problems.append(
                    f"config key '{train_section}.{names[train_section]}.{key}': fixes {key} = {sweep.fmt(fixed[key])}, "
                    f"but {_path(section, family, method, key)} would replace it with its candidates; allowed "
                    f"values: factors that scale it ({_path(section, family, method, key)}: ['x0.5', 'x2']), "
                    f"candidates of its own ({own}), or no {key} in {train_section}.{names[train_section]}")
    return problems


def _value_problems(where: str, values) -> list[str]:
    if not isinstance(values, list):
        return []
    factors = [v for v in values if sweep.is_factor(v)]
    names = [sweep.factor_name(v) if sweep.is_factor(v) else sweep.fmt(v) for v in values]
    if factors and len(factors) < len(values):
        return [f"config key '{where}': {values} mixes factors and values; allowed values: all factors of the "
                f"shared value ('x0.5', 'x2') or all values"]
    if len(set(names)) < len(names):
        return [f"config key '{where}': {values} lists a value twice; allowed values: distinct candidates"]
    if any(isinstance(v, str) and not sweep.is_factor(v) and set(v) & set("/,=") for v in values):
        return [f"config key '{where}': {values} has a value with '/', ',' or '=' (it names a folder); allowed "
                f"values: values without them"]
    return []


def _name_problems(config: dict, schema: dict, known: dict) -> list[str]:
    """Known families, methods and keys; every entry reaches a cell of this grid."""
    tsd_keys = [k for k in schema["properties"]["tsd"]["properties"] if k != "svd_cache"]
    sweepable = sorted(set(schema["properties"]["train"]["properties"]) - set(RESULT_NEUTRAL))
    sweepable += [sweep.TSD + k for k in tsd_keys]
    cells = grid_cells(config, known)
    problems = []
    for where, family, method, keys in _entries(config):
        registry, name = (FAMILIES, family) if family else (known, method)
        if name is not None and name not in registry:
            problems.append(unknown(where, name, sorted(registry)))
            continue
        for key, values in keys.items():
            reached = [c for c in cells if (family or c[0]) == c[0] and (method or c[2]) == c[2]
                       and sweep.reads(c[2], key)]
            if key not in sweepable:
                why = " (speed only, it cannot change a result)" if key in RESULT_NEUTRAL else ""
                problems.append(f"config key '{where}.{key}': {key!r} cannot be swept{why}; allowed values: "
                                f"{', '.join(sweepable)}")
            elif not reached:
                readers = sorted(m for m in config.get("methods", []) if sweep.reads(m, key))
                problems.append(f"config key '{where}.{key}': reaches no cell of this grid (its methods and task "
                                f"families: {sorted(config.get('methods', []))}, "
                                f"{sorted({c[0] for c in cells})}); allowed values: an entry for a family and "
                                f"method of the grid{f', tsd options for {readers}' if key.startswith(sweep.TSD) else ''}")
            else:
                problems += _value_problems(f"{where}.{key}", values)
    return problems


def _candidate_problems(config: dict, validators: dict, family: str, train_set: str, method: str) -> list[str]:
    """Each candidate of a cell, merged over its train and tsd options, against the schema."""
    given, problems = sweep.candidates(config, family, method), []
    base = sweep.shared(config, family, train_set, method)
    for name, values in sweep.settings(config, family, train_set, method).items():
        train_values, tsd_values = sweep.split(values)
        merged = {"train": merge_train(cell_train(config, family, train_set, method), train_values),
                  "tsd": {**config["tsd"], **tsd_values}}
        for section, validator in validators.items():
            for e in validator.iter_errors(merged[section]):
                key = (sweep.TSD if section == "tsd" else "") + key_path(e.absolute_path)
                where = _path(given[key][0], family, method, key) if key in given else "sweep"
                problems.append(f"config key '{where}': candidate {name}: {key}: {e.message}")
        for key in FRACTION_KEYS:
            if key in given and isinstance(base.get(key), (int, float)) and base[key] < 1 <= values[key]:
                problems.append(f"config key '{_path(given[key][0], family, method, key)}': candidate {name} "
                                f"makes the fraction {base[key]} into {values[key]}, a count of steps; allowed "
                                f"values: factors that keep it below 1")
        t, steps = merged["tsd"].get("dash_t"), merged["train"].get("steps")
        swept = next((k for k in ("tsd.dash_t", "tsd.dash_t_unit") if k in given), None)
        limit = switch_limit(merged["train"], merged["tsd"]) if isinstance(t, (int, float)) and 1 <= t else None
        if METHODS.get(method) and METHODS[method].switches and swept and limit is not None and limit <= t:
            counted = (f"the {limit} forward calls up to its steps ({steps})"
                       if merged["tsd"].get("dash_t_unit") == "forward" else f"its steps ({steps})")
            problems.append(f"config key '{_path(given[swept][0], family, method, swept)}': "
                            f"candidate {name}: dash_t {t} is not below {counted}, so {method} would "
                            f"never switch; allowed values: 0 <= dash_t < {limit}, or a fraction below 1")
    return problems


def _factor_problems(config: dict, family: str, train_set: str, method: str) -> list[str]:
    for key in sweep.factor_keys(config, family, method):
        value = sweep.shared(config, family, train_set, method).get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            where = _path(sweep.candidates(config, family, method)[key][0], family, method, key)
            return [f"config key '{where}': factors scale a number, but {key} is {value!r} for {method} on "
                    f"{train_set}; allowed values: candidate values such as [{sweep.fmt(value)}, ...]"]
    return []


def _family_problems(config: dict, known: dict) -> list[str]:
    """A method's candidates are the same labels on every train set of a family (one choice
    per family), and a method with a stage sweeps only what its stage does not read."""
    problems, cells = [], grid_cells(config, known)
    for family, method in dict.fromkeys((f, m) for f, _, m in cells):
        sets = [ts for f, ts, m in cells if (f, m) == (family, method)]
        labels = {ts: list(sweep.settings(config, family, ts, method)) for ts in sets}
        if len({tuple(v) for v in labels.values()}) > 1:
            keys = sorted(sweep.candidates(config, family, method))
            problems.append(f"config key 'method_sweep.{method}': its candidates differ between the train sets "
                            f"of {family} ({'; '.join(f'{ts}: {v}' for ts, v in labels.items())}), so no one "
                            f"choice fits the family; allowed values: factors of each train set's own value "
                            f"(e.g. {keys[0] if keys else 'lr'}: ['x0.5', 'x2'])")
        stage_bound = sorted(set(sweep.candidates(config, family, method)) - set(STAGE_FREE))
        if METHODS.get(method) and METHODS[method].stage and stage_bound:
            problems.append(f"config key 'sweep': {stage_bound} would change what {method}'s stage "
                            f"({METHODS[method].stage}) computes, which every candidate shares; allowed values "
                            f"for {method}: {', '.join(STAGE_FREE)}")
    return problems


def _selection_problems(config: dict, known: dict) -> list[str]:
    problems, selection = [], config.get("selection") or {}
    families = dict.fromkeys(TASKS[t].family for t in config.get("tasks", []) if t in TASKS)
    for family, spec in (selection.get("metric") or {}).items():
        parts = str(spec).split()
        if family not in FAMILIES:
            problems.append(unknown(f"selection.metric.{family}", family, sorted(FAMILIES)))
        elif len(parts) != 2 or parts[0] not in FAMILIES[family].protocols or parts[1] not in METRICS[parts[0]]:
            allowed = [f"{p} {m}" for p in FAMILIES[family].protocols for m in METRICS[p]]
            problems.append(f"config key 'selection.metric.{family}': {spec!r} is not a metric of {family}; "
                            f"allowed values: {', '.join(allowed)}")
    scored = (config.get("eval") or {}).get("protocols")
    if scored and selection.get("select_by", "score") == "score":
        for family in families:
            spec = (selection.get("metric") or {}).get(family)
            protocol = spec.split()[0] if spec else FAMILIES[family].select_on[0]
            if protocol not in scored:
                problems.append(f"config key 'selection.metric.{family}': selection reads {protocol!r}, which "
                                f"eval.protocols {scored} does not score; allowed values: a '<protocol> <metric>' "
                                f"of {', '.join(p for p in FAMILIES[family].protocols if p in scored)}")
    if selection.get("select_by") == "loss":
        problems += _loss_problems(config, known)
    return problems


def _loss_problems(config: dict, known: dict) -> list[str]:
    """select_by loss compares training's hold-out losses: every cell records one, on the same
    rows and terms for every candidate."""
    for family, train_set, method in grid_cells(config, known):
        if method not in METHODS:
            return [f"config key 'selection.select_by': 'loss' reads the loop's validation losses, which "
                    f"external method {method!r} does not record; allowed values: score"]
        basis = sorted(set(sweep.candidates(config, family, method)) & set(LOSS_BASIS))
        if basis:
            return [f"config key 'selection.select_by': 'loss' compares losses, but candidates differ in "
                    f"{basis}, which change what the loss measures; allowed values: score"]
        if not cell_train(config, family, train_set, method).get("val_size"):
            return [f"config key 'selection.select_by': 'loss' needs a validation loss, but {method} on "
                    f"{train_set} has no train.val_size; allowed values: score, or set train.val_size > 0"]
    return []


def problems(config: dict, schema: dict, known: dict) -> list[str]:
    """Every problem of the sweep and selection sections (none for a grid without a sweep)."""
    found = _name_problems(config, schema, known)
    if found or not sweep.active(config) or not isinstance(config.get("train"), dict):
        return found
    defaults = {s: {k: v["default"] for k, v in schema["properties"][s]["properties"].items() if "default" in v}
                for s in ("train", "tsd")}
    # as the workflow sees it once the schema has filled the defaults
    config = {**config, "train": {**defaults["train"], **config["train"]},
              "tsd": {**defaults["tsd"], **(config.get("tsd") or {})}}
    validators = {s: jsonschema.Draft202012Validator(schema["properties"][s]) for s in ("train", "tsd")}
    for family, train_set, method in grid_cells(config, known):
        factors = _factor_problems(config, family, train_set, method)  # a factor of a non-number: no candidates
        found += _conflicts(config, family, train_set, method) + factors
        found += [] if factors else _candidate_problems(config, validators, family, train_set, method)
    if found:
        return list(dict.fromkeys(found))
    found += _family_problems(config, known) + _selection_problems(config, known)
    return list(dict.fromkeys(found))
