"""What a resumable run saves and restores: trainable weights and the methods' adapter buffers,
optimizer, scheduler, RNG states, curves, and the hooks' analysis and timings. A checkpoint is
resumed only by a run with the same fingerprint (its config, seed and data size)."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from .. import atomic, provenance
from . import collectives

# Train options that change how a run goes, not its result: kept out of job params and
# fingerprints, so a change to them reruns nothing (the train script reads them from the config).
RESULT_NEUTRAL = ("checkpoint_every", "gradient_checkpointing")


def result_train(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in RESULT_NEUTRAL}


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def adapter_state(model) -> dict:
    """Trainable tensors plus the methods' adapter buffers (e.g. LoRA-Dash's selected directions)."""
    state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    state.update({n: b.detach().clone() for n, b in model.named_buffers() if ".lora_" in n})
    return state


def load_adapter_state(model, state: dict) -> None:
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    with torch.no_grad():
        for name, value in state.items():
            tensors[name].copy_(value)
    mirror_flags(model)


def mirror_flags(model) -> None:
    """After buffers were overwritten: states that mirror a buffer in Python (LoRA-Dash's on/off flag)."""
    for module in model.modules():
        if hasattr(module, "restored"):
            module.restored()


def save_checkpoint(path: Path, model, optimizer, scheduler, step: int, losses: list, fingerprint: str,
                    ctx=None, curves: dict | None = None, rng: list | None = None):
    """`rng`: every data-parallel process's RNG states in rank order (default: this process's)."""
    rng = rng or [rng_state()]
    with atomic.file(path) as tmp:
        torch.save({"fingerprint": fingerprint, "step": step, "losses": losses, "curves": curves or {},
                    "adapter": adapter_state(model), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": rng[0], "rng_ranks": rng,
                    "analysis": ctx.analysis if ctx else {}, "timings": ctx.timings if ctx else {}}, tmp)


def restore(ckpt: dict, model, optimizer, scheduler, ctx=None):
    """Put a checkpoint (from read_checkpoint) back into the run; returns (step, losses, curves)."""
    load_adapter_state(model, ckpt["adapter"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    ranks = ckpt.get("rng_ranks", [ckpt["rng"]])
    # A resume with another process count keeps rank 0's stream (dropout masks differ anyway).
    _set_rng_state(ranks[collectives.process_rank()] if len(ranks) == collectives.world_size() else ckpt["rng"])
    if ctx is not None:
        ctx.analysis.update(ckpt["analysis"])
        ctx.timings.update(ckpt["timings"])
    print(f"[train] resumed from the checkpoint at step {ckpt['step']}")
    return ckpt["step"], ckpt["losses"], ckpt.get("curves", {})


def read_checkpoint(path: Path | None, fingerprint: str | None = None) -> dict | None:
    """A checkpoint's contents, or None when there is none or (given a fingerprint) it belongs
    to another run config."""
    if path is None or not Path(path).exists():
        return None
    try:
        ckpt = torch.load(path, weights_only=False)
    except Exception as err:  # truncated or corrupt (e.g. a node crash mid-write): train from the start
        atomic.set_aside(path, f"{type(err).__name__}: {err}")
        return None
    if fingerprint is not None and ckpt["fingerprint"] != fingerprint:
        print(f"[train] ignoring checkpoint {path}: it belongs to a different run config")
        return None
    return ckpt


def run_fingerprint(cfg: dict, seed: int, n_examples: int, ctx=None) -> str:
    """What a checkpoint must match to be resumed (knobs that cannot change results left out)."""
    return provenance.config_hash({"cfg": result_train(cfg),
                                   "seed": seed, "n": n_examples, "tsd": ctx.tsd if ctx else None})
