"""Residualised initialisations (LoRA-Init, MiLoRA; PiSSA and OLoRA through peft): A and B set
from chosen singular directions, W <- W - scaling B0 A0 so the model is unchanged at step 0,
and B0, A0 kept so the trained change can be exported relative to the original W."""
from __future__ import annotations

import torch
from torch import nn

from . import export, tsd
from .hooks import Hooks


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


class RecordResidualInit(Hooks):
    """For inits that peft residualises itself (PiSSA, OLoRA: W <- W - scaling B0 A0): keep B0, A0
    so the trained change can be exported relative to the original W, as peft converts PiSSA."""

    exports_via_factors = True

    def setup(self, model, ctx):
        for _, layer in export.lora_layers(model):
            remember_init(layer)
