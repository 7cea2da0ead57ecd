"""LoRA-Init: initialise LoRA's A and B from a layer's task-specific directions.

The paper's equations were not available; this is the project's reading (see README):
1. estimate the task change dW* before training: a short plain-LoRA warm-up (dW* = scaling B A)
   or gradients accumulated over a few batches (dW* ~ -grad W);
2. rank W's core directions u_i v_i^T by change rate |u_i^T dW* v_i| / s_i and keep the top r;
3. set scaling * B0 A0 = U_I diag(g) V_I^T with g = s_I ("singular") or 1 ("unit"), split as
   B0 = U_I sqrt(g / scaling), A0 = sqrt(g / scaling) V_I^T;
4. optionally residualise W <- W - scaling B0 A0 (default), so the output is unchanged at step 0.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from . import tsd
from .export import effective_factors, lora_layers


class InitReference(nn.Module):
    """The initial factors B0, A0 removed from W (kept to express the change from the original W)."""

    def __init__(self, B0: torch.Tensor, A0: torch.Tensor):
        super().__init__()
        self.register_buffer("B0", B0.detach().clone())
        self.register_buffer("A0", A0.detach().clone())


def init_factors(dec: tsd.SVD, idx: torch.Tensor, scaling: float, scale: str):
    gains = dec.S[idx] if scale == "singular" else torch.ones_like(dec.S[idx])
    root = torch.sqrt(gains / scaling)
    B0 = dec.U[:, idx] * root
    A0 = root[:, None] * dec.Vh[idx]
    return B0, A0


def apply(layer, B0: torch.Tensor, A0: torch.Tensor, residualise: bool, adapter: str = "default") -> None:
    A, B = layer.lora_A[adapter].weight, layer.lora_B[adapter].weight
    scaling = layer.scaling[adapter]
    with torch.no_grad():
        A.copy_(A0.to(A))
        B.copy_(B0.to(B))
        if residualise:
            base = layer.get_base_layer().weight
            base.sub_((scaling * (B0 @ A0)).to(base))
            remember_init(layer, adapter)


def remember_init(layer, adapter: str = "default") -> None:
    """Record the current A, B as the (already residualised) initial factors B0, A0."""
    A, B = layer.lora_A[adapter].weight, layer.lora_B[adapter].weight
    layer.lora_init_ref = nn.ModuleDict({adapter: InitReference(B, A)})


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
