"""Faults as results: out-of-memory errors that name the cell's levers, and loss curves that
diverged (a non-finite loss or gradient norm) or did not learn (flagged, not hidden)."""
from __future__ import annotations

import contextlib
import math

import torch


class OutOfMemory(RuntimeError):
    """A job ran out of memory; the message names what to change for that cell."""


@contextlib.contextmanager
def out_of_memory(what: str, levers: list[str]):
    """Turn torch's out-of-memory error into one naming the cell and its levers."""
    try:
        yield
    except torch.OutOfMemoryError as err:
        lines = "\n".join(f"  - {lever}" for lever in levers)
        raise OutOfMemory(f"out of memory {what}. Levers for this cell:\n{lines}\n(torch: {err})") from err


def train_levers(cfg: dict) -> list[str]:
    batch, micro = cfg["batch_size"], cfg.get("micro_batch_size") or cfg["batch_size"]
    return [f"train.micro_batch_size (now {micro}): smaller micro-batches accumulate to batch_size {batch}; "
            "the same gradient up to rounding",
            f"train.max_length (now {cfg['max_length']}): shorter rows (changes results)",
            "a larger GPU for this rule (the profile's gpu_model / mem_mb)"]


def eval_levers(eval_cfg: dict) -> list[str]:
    return [f"eval.batch_size (now {eval_cfg['batch_size']}): in bf16 a batch's padding moves scores by rounding",
            "eval.ifeval_max_gen_toks / eval.max_gen_toks (generation length; changes results)",
            "a larger GPU for this rule (the profile's gpu_model / mem_mb)"]


def non_finite(*values: float) -> bool:
    return any(not math.isfinite(v) for v in values)


def loss_flag(losses: list[float], uniform_loss: float | None = None) -> str | None:
    """Why a finished curve did not learn, or None: its last losses are not below its first
    ('no_decrease'), or sit at the loss of a uniform output over the vocabulary ('uniform_output',
    ln V for causal LMs)."""
    if len(losses) < 2:
        return None
    k = max(1, min(5, len(losses) // 4))
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    if uniform_loss is not None and abs(last - uniform_loss) <= 0.02 * uniform_loss:
        return "uniform_output"
    return "no_decrease" if last >= first else None
