"""What a cell records for the analysis figures, per adapted matrix: singular values, change
rates at the end (and at the switch / init where the method has them), selected indices, and,
every `analysis_every` steps, the top change rates so far (a trace of small arrays, no weights).

An adapter's change is its factors' (export.effective_factors); full fine-tuning's is W - W0
for the same target matrices, from a copy of W0 taken before training: the paper's dW*, whose
top change rates are the true task-specific directions."""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch
from peft import LoraConfig
from peft.tuners.tuners_utils import check_target_module_exists
from torch import nn

from ..methods import export, tsd
from ..methods.export import lora_layers
from ..methods.hooks import Context, Hooks
from . import collectives

TRACE_TOP = 32  # directions kept per matrix and snapshot: the paper's questions read the top 16 at most

# (model, ctx) -> (module key, singular values of its original W, change rates of its change
# so far), one matrix at a time: only S leaves the generator, so no caller holds a layer's U and
# V while the next is fetched (an 8B model's SVDs do not fit at once).
Changes = Callable[[nn.Module, Context], Iterator[tuple[str, torch.Tensor, torch.Tensor]]]


def adapter_changes(model, ctx: Context):
    for name, layer in lora_layers(model):
        dec = ctx.svd_of(name, layer)
        with torch.no_grad():
            rates = tsd.change_rates(dec, *export.effective_factors(layer))
        S = dec.S
        del dec
        yield name.removeprefix("base_model.model."), S, rates


def originals(model, targets) -> dict[str, torch.Tensor]:
    """A CPU float32 copy of every target matrix before training (full fine-tuning's W0): the
    linear layers peft's own matching rule would adapt for these target modules."""
    config = LoraConfig(target_modules=list(targets))
    return {name: m.weight.detach().to("cpu", torch.float32, copy=True) for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and check_target_module_exists(config, name)}


def full_changes(start: dict[str, torch.Tensor]) -> Changes:
    """Full fine-tuning's changes W - W0 against W0's SVD (cached like the adapters' SVDs)."""

    def changes(model, ctx: Context):
        modules = dict(model.named_modules())
        for name, w0 in start.items():
            w = modules[name].weight
            w0 = w0.to(w.device)  # the SVD where the model runs (an 8B model's on its GPU)
            dec = ctx.cache.get(w0, ctx.svd_dtype)
            with torch.no_grad():
                rates = tsd.change_rates_full(dec, w.detach().float() - w0)
            S = dec.S
            del dec, w0
            yield name, S, rates

    return changes


def top_rates(rates: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(indices, rates) of the TRACE_TOP largest change rates, largest first."""
    idx = tsd.top_directions(rates, TRACE_TOP)
    return idx.cpu().numpy().astype(np.int32), rates[idx].float().cpu().numpy()


class Traced(Hooks):
    """A method's hooks, plus a snapshot of every matrix's top change rates after every
    `every`-th optimizer step and the last one (after the method's own hook, so a switch at
    that step is in it). Snapshots live in ctx.analysis, so a resumed run keeps them."""

    def __init__(self, inner: Hooks, every: int, changes: Changes):
        self.inner, self.every, self.changes = inner, every, changes
        self.exports_via_factors = inner.exports_via_factors

    def setup(self, model, ctx):
        self.inner.setup(model, ctx)

    def after_step(self, model, step, ctx):
        changed = self.inner.after_step(model, step, ctx)
        if step and (step % self.every == 0 or step == ctx.total_steps) and collectives.is_main():
            ctx.analysis.setdefault("trace", {})[step] = {key: top_rates(rates)
                                                          for key, _, rates in self.changes(model, ctx)}
        return changed


def trace_arrays(trace: dict) -> dict:
    """'<module>|trace_steps' (T), '|trace_indices' (T x TRACE_TOP), '|trace_rates' from the snapshots."""
    out = {}
    steps = sorted(trace)
    for key in trace[steps[0]] if steps else []:
        out[f"{key}|trace_steps"] = np.array(steps, np.int32)
        out[f"{key}|trace_indices"] = np.stack([trace[s][key][0] for s in steps])
        out[f"{key}|trace_rates"] = np.stack([trace[s][key][1] for s in steps])
    return out


def analysis_arrays(model, ctx: Context, changes: Changes = adapter_changes) -> dict:
    """Per adapted matrix: singular values, change rates at the end (and at the switch / init
    where the method has them), selected indices, the trace. Keys are '<module>|<field>'."""
    out = {}
    for key, S, rates in changes(model, ctx):
        out[f"{key}|singular_values"] = S.float().cpu().numpy()
        out[f"{key}|rates_end"] = rates.float().cpu().numpy()
        name = f"base_model.model.{key}"
        for phase in ("switch", "init"):
            if name in ctx.analysis.get(phase, {}):
                out[f"{key}|rates_{phase}"] = ctx.analysis[phase][name]["rates"].numpy()
                out[f"{key}|indices_{phase}"] = ctx.analysis[phase][name]["indices"].numpy()
    return {**out, **trace_arrays(ctx.analysis.get("trace", {}))}
