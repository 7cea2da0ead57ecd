"""What every method's hooks share: the context they are given (options, the step budget, the
SVD cache, callables from the training loop), plain LoRA's hooks (nothing beyond peft), and a
chain that runs several in order."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from . import export, tsd


@dataclass
class Context:
    """What hooks may use: options, the step budget, the SVD cache, and two callables from
    the training loop (a plain-LoRA warm-up of n steps, and n training batches)."""

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
