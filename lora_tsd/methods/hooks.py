"""What every method's hooks share: the context they are given (options, the step budget, the
SVD cache, callables from the training loop), plain LoRA's hooks (nothing beyond peft), and a
chain that runs several in order."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from . import export, tsd


@dataclass(frozen=True)
class Forwards:
    """The forward calls of a training run, counted as the official LoRA-Dash layer counts them
    (its counter goes up in every forward of the unmerged layer: training and evaluation alike):
    each optimizer step runs `per_step` (its micro-batches), and a validation after every
    `val_every`-th step runs `per_validation` more (0: none during training). Counted as one
    process runs the whole batch, so a data-parallel cell counts as its one-process
    counterpart. A pure function of the step: a resumed run recomputes the count exactly."""

    per_step: int = 1
    val_every: int = 0
    per_validation: int = 0

    def through(self, step: int) -> int:
        """Forwards run when step `step`'s last micro-batch has run (its update not yet made;
        the validations after steps 1 .. step-1 included); 0 for step 0."""
        if step <= 0:
            return 0
        validations = (step - 1) // self.val_every if self.val_every and self.per_validation else 0
        return step * self.per_step + validations * self.per_validation

    def switch_step(self, t: int) -> int:
        """The optimizer step after which the official layer takes its directions for a
        pre-launch of `t` forwards: it selects in forward t + 1, from the dW of the steps
        completed by then, i.e. after the last step k whose micro-batches all ran within the
        first t forwards (through(k) <= t). Validation forwards only move it earlier."""
        k = max(0, t // self.per_step)  # through(k) >= k * per_step: no later k can qualify
        while k > 0 and self.through(k) > t:
            k -= 1
        return k


@dataclass
class Context:
    """What hooks may use: options, the step budget, the SVD cache, and two callables from
    the training loop (a plain-LoRA warm-up of n steps, and n training batches). `forwards`
    is the loop's forward count (set by the loop when it starts; LoRA-Dash's
    `dash_t_unit: forward` reads it)."""

    train: dict
    tsd: dict
    total_steps: int
    cache: tsd.SVDCache
    warmup: Callable[[object, int], dict] | None = None
    batches: Callable[[int], list] | None = None
    svd_dtype: torch.dtype = torch.float32
    stage_input: str | None = None  # the output of the method's own workflow stage, if it has one
    analysis: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    resume: dict | None = None  # the checkpoint a resumed run continues from (checkpoint.read_checkpoint)
    seed: int = 0  # the cell's seed (an ablation's random directions are drawn from it)
    forwards: Forwards | None = None  # the training loop's forward calls (training.loop.forward_count)
    _keys: dict = field(default_factory=dict)

    def svd_of(self, name: str, layer) -> tsd.SVD:
        """SVD of a layer's original weight, read from the disk cache or computed where the
        layer lives. Not kept: each caller uses one layer's SVD and lets it go (an 8B model's
        SVDs would take ~23 GiB of the GPU). The cache key is taken at the first call, before
        any residualisation, so a later phase reads the entry of the exact original W."""
        weight = export.original_weight(layer)
        if self.cache.root is not None and name not in self._keys:
            self._keys[name] = self.cache.key(weight, self.svd_dtype)
        return self.cache.get(weight, self.svd_dtype, key=self._keys.get(name))

    def steps(self, value: float) -> int:
        """An option given as steps (>= 1) or as a fraction of the run (< 1)."""
        return int(value) if value >= 1 else int(round(value * self.total_steps))


class Hooks:
    """Plain LoRA: nothing beyond peft."""

    exports_via_factors = False

    def setup(self, model, ctx: Context) -> None:
        pass

    def after_step(self, model, step: int, ctx: Context) -> bool:
        """True when it changed the adapter (data-parallel processes then take rank 0's)."""
        return False


class Chain(Hooks):
    """Hooks run in order (LoRA-TSD = LoRA-Init, then LoRA-Dash)."""

    exports_via_factors = True

    def __init__(self, *parts: Hooks):
        self.parts = parts

    def setup(self, model, ctx):
        for part in self.parts:
            part.setup(model, ctx)

    def after_step(self, model, step, ctx):
        return any([part.after_step(model, step, ctx) for part in self.parts])
