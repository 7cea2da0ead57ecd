"""Metrics shipped with the package. `load_glue(task)` returns `evaluate`'s GLUE metric for a task:
the module shipped under `glue/` (loaded by path) when the hub is off (HF_HUB_OFFLINE true, the
default here), else the hub's `glue` metric; both take the same config names and give the same keys.

`evaluate` is imported inside `load_glue` only: it is slow to import."""
from __future__ import annotations

import ast
import os
from pathlib import Path

GLUE_MODULE = Path(__file__).resolve().parent / "glue"


def _module_keys() -> dict[str, tuple[str, ...]]:
    """GLUE config name -> score keys, read from the shipped module's own table without
    importing it (it imports evaluate, datasets, scipy): the module must stay self-contained."""
    tree = ast.parse((GLUE_MODULE / "glue.py").read_text())
    table = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                 and any(getattr(t, "id", None) == "GLUE_KEYS" for t in node.targets))
    return ast.literal_eval(table)


GLUE_KEYS: dict[str, tuple[str, ...]] = _module_keys()

_TRUE = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """HF_HUB_OFFLINE set to a true value (1/true/yes/on); unset counts as offline here."""
    return os.environ.get("HF_HUB_OFFLINE", "1").strip().lower() in _TRUE


def load_glue(task: str):
    """The GLUE metric for `task` (a key of GLUE_KEYS); KeyError for any other name."""
    if task not in GLUE_KEYS:
        raise KeyError(f"Unknown GLUE configuration {task!r}: choose one of {sorted(GLUE_KEYS)}")
    import evaluate

    if hub_offline():
        return evaluate.load(str(GLUE_MODULE), task)
    return evaluate.load("glue", task)
