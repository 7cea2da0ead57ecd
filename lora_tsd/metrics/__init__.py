"""Metrics shipped with the package. `load_glue(task)` returns `evaluate`'s GLUE metric for a task:
the module shipped under `glue/` (loaded by path) when the hub is off (HF_HUB_OFFLINE true, the
default here), else the hub's `glue` metric; both take the same config names and give the same keys.

`evaluate` is imported inside `load_glue` only: it is slow to import."""
from __future__ import annotations

import os
from pathlib import Path

GLUE_MODULE = Path(__file__).resolve().parent / "glue"

# GLUE config name -> the keys its score carries (same as the hub's `glue` metric).
GLUE_KEYS: dict[str, tuple[str, ...]] = {
    "cola": ("matthews_correlation",),
    "sst2": ("accuracy",),
    "mrpc": ("accuracy", "f1"),
    "qqp": ("accuracy", "f1"),
    "stsb": ("pearson", "spearmanr"),
    "mnli": ("accuracy",),
    "mnli_matched": ("accuracy",),
    "mnli_mismatched": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
}

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
