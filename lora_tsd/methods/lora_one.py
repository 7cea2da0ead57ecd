"""LoRA-One (Zhang, Liu and Chen, ICML 2025): A and B from the SVD of the one-step full
fine-tuning gradient, so the adapter starts aligned with the gradient's top singular subspace.
Written from the paper's algorithm, read beside the authors' code (YuanheZ/LoRA-One, run_exp.py's
"gradient" init with its spectral "OS-LoRA-Full-AN" direction and "stable" scale):

    -G = U S V^T   (G: the mean gradient of the training loss w.r.t. W over the stage's rows)
    B0 = k U_r S_r^(1/2),  A0 = k S_r^(1/2) V_r^T,  k = m^(1/4) / sqrt(gamma * max(1, s_1))

with m = W's output size and gamma = 16 (the authors' defaults; the top singular value is
normalised to 1 when it exceeds 1). W <- W - scaling B0 A0, so the model is unchanged at step 0:
the authors' code trains from W + scaling B0 A0 and takes scaling B0 A0 away only when it
merges (a copy of the initial adapter with negated alpha); residualised from the start, what
trains is what is merged (docs/methods.md gives the measured reason). The paper's
preconditioned optimizer is not part of this entry: the cell trains with the grid's AdamW.

The gradient is LoRA-GA's stage (rule gradient_init, peft's estimator), read per seed."""
from __future__ import annotations

import time
import math

import torch

from . import export, residual, stage
from .hooks import Hooks

GAMMA = 16.0


def spectral_factors(grad: torch.Tensor, rank: int, gamma: float = GAMMA, dtype=torch.float32):
    """(B0, A0) of a layer from its mean gradient (out x in)."""
    U, S, Vh = torch.linalg.svd(-grad.to(dtype), full_matrices=False)
    k = grad.shape[0] ** 0.25 / math.sqrt(gamma * max(1.0, float(S[0])))
    root = S[:rank].sqrt()
    return U[:, :rank] * (root * k), (root * k)[:, None] * Vh[:rank]


class LoraOneHooks(Hooks):
    exports_via_factors = True  # residualised: exported relative to the original W

    def setup(self, model, ctx):
        started, saved = time.perf_counter(), stage.saved(ctx.stage_input)
        for name, layer in export.lora_layers(model):
            grad = saved["grads"][stage.base_name(name)].to(layer.lora_A["default"].weight.device)
            B0, A0 = spectral_factors(grad, layer.r["default"])
            residual.apply(layer, B0, A0, residualise=True)
        ctx.timings.update(stage.costs(saved, started))
