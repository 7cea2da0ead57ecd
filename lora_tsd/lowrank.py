"""Scoring a saved LoRA adapter over bf16 weights without merging it: y = W x + U (D x), the
side branch in the weights' dtype and added inside its second matmul (an in-place addmm).

Merged into bf16 weights, a small update would round away into W's 8-bit mantissa. peft's own
unmerged path keeps the adapter float32: it casts every input up and makes three passes over
each output (scale, add, cast back), which on a CPU cost more than the frozen matmul itself.
Here the factors are re-expressed once, in float32, as U = Q (orthonormal) and D = R A from
the QR of the scaled B, so that an update which cancels between factors (a residualised init
exports B and -B0 side by side) is formed before rounding, and bf16 keeps the update's own
precision. For scoring only: the sum is written into the frozen matmul's output."""
from __future__ import annotations

import torch
from peft.tuners.lora.layer import Linear as LoraLinear
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn


class LowRankLinear(nn.Module):
    """A frozen linear layer plus a low-rank term: base(x) + x D^T U^T."""

    def __init__(self, base: nn.Linear, up: torch.Tensor, down: torch.Tensor):
        super().__init__()
        self.base = base
        self.register_buffer("up", up)  # (out, k)
        self.register_buffer("down", down)  # (k, in)

    @property
    def weight(self) -> torch.Tensor:  # what code reading a linear layer expects (peft's layers pass it too)
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        h = nn.functional.linear(x.to(self.down.dtype), self.down)
        y.view(-1, y.shape[-1]).addmm_(h.reshape(-1, h.shape[-1]), self.up.t())
        return y


@torch.no_grad()
def factors(layer: LoraLinear, adapter: str = "default") -> tuple[torch.Tensor, torch.Tensor]:
    """(U, D) in float32 with U D = scaling B A: U orthonormal columns, D = R A."""
    scaled_b = layer.lora_B[adapter].weight.float() * layer.scaling[adapter]
    q, r = torch.linalg.qr(scaled_b)
    return q, r @ layer.lora_A[adapter].weight.float()


def _plain(layer) -> bool:
    """A single plain LoRA adapter on an ordinary linear layer: no variant (DoRA, aLoRA and the
    rest have a forward of their own and stay peft's), no LoRA bias."""
    return (isinstance(layer, LoraLinear) and list(layer.lora_A) == ["default"]
            and "default" not in layer.lora_variant and not layer.lora_bias.get("default", False)
            and not layer.fan_in_fan_out and type(layer.get_base_layer()) is nn.Linear)


def side_branches(model):
    """Replace every plain LoRA layer of a peft model by its LowRankLinear in the frozen weight's
    dtype; returns the model (the transformers model itself when no peft layer is left) and how
    many layers were replaced."""
    plain = [(name, m) for name, m in model.named_modules() if _plain(m)]
    for name, layer in plain:
        parent, _, child = name.rpartition(".")
        up, down = factors(layer)
        base = layer.get_base_layer()
        fast = LowRankLinear(base, up.to(base.weight.device, base.weight.dtype),
                             down.to(base.weight.device, base.weight.dtype))
        setattr(model.get_submodule(parent), child, fast)
    left = any(isinstance(m, BaseTunerLayer) for m in model.modules())
    return (model if left else model.get_base_model()), len(plain)
