"""MiLoRA (Wang et al. 2024): A and B from the r minor singular components of W, residualised."""
from __future__ import annotations

import torch

from . import export, residual
from .hooks import Hooks


class MiLoRAHooks(Hooks):
    exports_via_factors = True

    def setup(self, model, ctx):
        for name, layer in export.lora_layers(model):
            dec, r = ctx.svd_of(name, layer), layer.r["default"]
            idx = torch.arange(dec.S.numel() - r, dec.S.numel())
            B0, A0 = residual.init_factors(dec, idx, layer.scaling["default"], "singular")
            residual.apply(layer, B0, A0, residualise=True)
            del dec  # one layer's SVD at a time
        print(f"[milora] initialised from minor components; {ctx.cache.report()}")
