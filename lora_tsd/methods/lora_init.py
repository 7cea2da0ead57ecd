"""LoRA-Init: initialise LoRA's A and B from a layer's task-specific directions.

The paper's equations were not available; this is the project's reading (docs/methods.md):
1. estimate the task change dW* before training: a short plain-LoRA warm-up (dW* = scaling B A)
   or gradients accumulated over a few batches (dW* ~ -grad W);
2. rank W's core directions u_i v_i^T by change rate |u_i^T dW* v_i| / s_i and keep the top r;
3. set scaling * B0 A0 = U_I diag(g) V_I^T with g = s_I ("singular") or 1 ("unit"), split as
   B0 = U_I sqrt(g / scaling), A0 = sqrt(g / scaling) V_I^T;
4. optionally residualise W <- W - scaling B0 A0 (default), so the output is unchanged at step 0.
"""
from __future__ import annotations

import contextlib
import time

import torch

from . import tsd
from .export import effective_factors, lora_layers
from .hooks import Hooks
from .residual import apply, init_factors


def warmup_rates(name, layer, dec: tsd.SVD, adapter: str = "default") -> torch.Tensor:
    """A layer's change rates under its (already warmed-up) LoRA update."""
    with torch.no_grad():
        return tsd.change_rates(dec, *effective_factors(layer, adapter))


def accumulated_gradients(model, batches, adapter: str = "default") -> dict:
    """The mean gradient of the loss w.r.t. each adapted W over the batches (W's dtype)."""
    layers = dict(lora_layers(model, adapter))
    weights = {n: l.get_base_layer().weight for n, l in layers.items()}
    for w in weights.values():
        w.requires_grad_(True)
        w.grad = None
    n = 0
    for batch in batches:
        model(**batch).loss.backward()
        n += 1
    grads = {}
    for name, w in weights.items():
        grads[name] = w.grad / max(n, 1)
        w.grad = None
        w.requires_grad_(False)
    for p in model.parameters():
        p.grad = None
    return grads


def gradient_rates(grads: dict):
    """Rates under -grad W, each layer's gradient let go once its rates are taken."""

    def rates(name, layer, dec: tsd.SVD) -> torch.Tensor:
        return tsd.change_rates_full(dec, -grads.pop(name))

    return rates


def initialise(model, rates_of, svd_of, scale: str, residualise: bool, adapter: str = "default") -> dict:
    """Re-initialise every LoRA layer from its top-r change-rate directions, one layer at a
    time: its SVD is fetched, used for the rates (`rates_of(name, layer, svd)`) and the factors,
    and let go, so no two layers' SVDs are held at once. Returns each layer's rates and indices."""
    chosen = {}
    for name, layer in lora_layers(model, adapter):
        r = layer.r[adapter]
        dec = svd_of(name, layer)
        rates = rates_of(name, layer, dec)
        idx = tsd.top_directions(rates, r)
        if idx.numel() < r:
            raise ValueError(f"{name}: rank {r} exceeds the {idx.numel()} directions of its weight")
        B0, A0 = init_factors(dec, idx, layer.scaling[adapter], scale)
        apply(layer, B0, A0, residualise, adapter)
        chosen[name] = {"rates": rates.float().cpu(), "indices": idx.cpu()}
        del dec
    return chosen


@contextlib.contextmanager
def others_kept(model, adapter: str = "default"):
    """Restore every trainable parameter outside the LoRA factors (a classifier head, say) to
    its value on entry: an estimate's warm-up must leave the model as it found it."""
    kept = {n: p.detach().clone() for n, p in model.named_parameters()
            if p.requires_grad and ".lora_A." not in n and ".lora_B." not in n}
    try:
        yield
    finally:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in kept.items():
                params[name].copy_(value)


def rebuild(model, saved: dict, residualise: bool, adapter: str = "default") -> None:
    """Redo a checkpointed initialisation: the saved B0, A0 (its chosen directions' factors)
    are subtracted from W again, so W matches the checkpointed A and B exactly."""
    if not residualise:
        return  # W was never changed; A and B come back with the checkpoint
    for name, layer in lora_layers(model, adapter):
        B0 = saved[f"{name}.lora_init_ref.{adapter}.B0"]
        A0 = saved[f"{name}.lora_init_ref.{adapter}.A0"]
        apply(layer, B0, A0, residualise=True, adapter=adapter)


class InitHooks(Hooks):
    """LoRA-Init: estimate the task change, then initialise A and B from the top-r TSDs."""

    exports_via_factors = True

    def setup(self, model, ctx):
        if ctx.resume and "init" in ctx.resume.get("analysis", {}):
            # Never re-select on resume: W is rebuilt from the checkpoint's B0, A0.
            rebuild(model, ctx.resume["adapter"], ctx.tsd["init_residualise"])
            ctx.analysis["init"] = ctx.resume["analysis"]["init"]
            print("[lora-init] resumed: W rebuilt from the checkpoint's initial factors (no re-selection)")
            return
        t0 = time.perf_counter()
        n = ctx.steps(ctx.tsd["init_steps"])
        if ctx.tsd["init_estimate"] == "warmup":
            with others_kept(model):  # the warm-up may train only A and B's estimate
                ctx.warmup(model, n)
            rates_of = warmup_rates
        else:
            rates_of = gradient_rates(accumulated_gradients(model, ctx.batches(n)))
        ctx.analysis["init"] = initialise(model, rates_of, ctx.svd_of, ctx.tsd["init_scale"],
                                          ctx.tsd["init_residualise"])
        ctx.timings["init_s"] = time.perf_counter() - t0
        ctx.timings["init_steps"] = n
        print(f"[lora-init] {ctx.tsd['init_estimate']} estimate over {n} steps, "
              f"{ctx.timings['init_s']:.2f} s; {ctx.cache.report()}")
