"""Sweeps: the candidate settings (train keys, and tsd options as "tsd.<key>") of a grid cell, their folder labels, and the shared
setting (the one the train sections give the cell, always trained, so a sweep grid also has
today's table). Candidates for a key come from the most specific sweep section naming it for
the cell: method_sweep, then family_sweep, then sweep. A candidate is a value, or a factor of
the cell's shared value ("x0.5", "x2"): one list then scales every dataset's own recipe."""
from __future__ import annotations

import itertools
import re

from ..methods.registry import METHODS
from .cells import cell_train

TSD = "tsd."  # a swept key "tsd.dash_s" is a tsd option: it reaches only the methods that read tsd


def reads(method: str, key: str) -> bool:
    """Whether a swept key can change this method's cells (a tsd option: the methods reading it)."""
    return not key.startswith(TSD) or (method in METHODS and key[len(TSD):] in METHODS[method].tsd_options)


def split(values: dict) -> tuple[dict, dict]:
    """A setting's values as (train keys, tsd options without their prefix)."""
    return ({k: v for k, v in values.items() if not k.startswith(TSD)},
            {k[len(TSD):]: v for k, v in values.items() if k.startswith(TSD)})


def named_keys(config: dict) -> set[str]:
    """Every key any sweep section names."""
    entries = [config.get("sweep") or {}]
    entries += [e or {} for section in ("family_sweep", "method_sweep") for e in (config.get(section) or {}).values()]
    return {key for entry in entries for key in entry}


def active(config: dict) -> bool:
    """Whether any sweep section names a key (a grid with {setting} folders and validation rows)."""
    return bool(named_keys(config))


def candidates(config: dict, family: str, method: str) -> dict[str, tuple[str, list]]:
    """key -> (the section that gives its candidates, the values) for one cell."""
    out = {k: ("sweep", list(v)) for k, v in (config.get("sweep") or {}).items()}
    for section, name in (("family_sweep", family), ("method_sweep", method)):
        for key, values in ((config.get(section) or {}).get(name) or {}).items():
            out[key] = (section, list(values))
    return {k: v for k, v in out.items() if reads(method, k)}


def fmt(value) -> str:
    """A value as it appears in a label: floats by repr (exact, so two values never share a
    label), booleans and null as in YAML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return repr(value) if isinstance(value, float) else str(value)


def is_factor(value) -> bool:
    return isinstance(value, str) and re.fullmatch(r"x(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", value) is not None


def factor_name(value: str) -> str:
    """'x2' -> 'x2.0': one exact name per factor, so 'x2' and 'x2.0' are one candidate."""
    return f"x{float(value[1:])!r}"


def resolve(value, shared_value):
    """A candidate's value for a cell: a factor times the shared value (an int stays an int)."""
    if not is_factor(value):
        return value
    scaled = float(value[1:]) * shared_value
    return int(round(scaled)) if isinstance(shared_value, int) and float(scaled).is_integer() else scaled


def factor_keys(config: dict, family: str, method: str) -> set[str]:
    """Keys whose candidates for this cell are all factors."""
    return {k for k, (_, values) in candidates(config, family, method).items() if all(map(is_factor, values))}


def label(values: dict) -> str:
    """The folder name of a setting: 'lr=0.0005' or 'lora_dropout=0.05,lr=0.0005'; 'shared'
    for a method no swept key reaches (plain LoRA beside a sweep of a tsd option)."""
    return ",".join(f"{k}={fmt(values[k])}" for k in sorted(values)) or "shared"


def shared(config: dict, family: str, train_set: str, method: str) -> dict:
    """The values the train sections give the cell (the grid without sweeps) of the keys swept
    for its method: what its labels show, so a method without candidates is 'shared' on every
    train set of its family."""
    cfg = cell_train(config, family, train_set, method)
    tsd = config.get("tsd") or {}
    return {k: tsd.get(k[len(TSD):]) if k.startswith(TSD) else cfg.get(k) for k in candidates(config, family, method)}


def settings(config: dict, family: str, train_set: str, method: str) -> dict[str, dict]:
    """label -> the swept keys' values of every candidate of a cell, in the order the config
    lists them, with the shared setting added last when no candidate equals it."""
    base = shared(config, family, train_set, method)
    cands = candidates(config, family, method)
    keys = sorted(cands)
    scaled = factor_keys(config, family, method)
    shown_base = {k: "x1.0" if k in scaled else v for k, v in base.items()}
    out = {}
    for combo in itertools.product(*(cands[k][1] for k in keys)):
        shown = {**shown_base, **{k: factor_name(v) if is_factor(v) else v for k, v in zip(keys, combo)}}
        out[label(shown)] = {**base, **{k: resolve(v, base[k]) for k, v in zip(keys, combo)}}
    if base not in out.values():  # by value: a candidate 20.0 is the shared 20
        out[label(shown_base)] = base
    return out


def shared_label(config: dict, family: str, train_set: str, method: str) -> str:
    """The label of the candidate equal to the shared setting."""
    base = shared(config, family, train_set, method)
    return next(name for name, values in settings(config, family, train_set, method).items() if values == base)
