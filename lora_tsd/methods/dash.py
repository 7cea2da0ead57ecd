"""LoRA-Dash (Si et al., ICLR 2025) as a peft LoRA variant.

Each adapted layer gets a `lora_dash` state: a trainable vector d (length s, zero at start),
and frozen buffers U_S (out x s), V_S (in x s) filled at the switch. Forward:
    y = W x + scaling * B A drop(x) + U_S diag(d) V_S^T drop(x)
with one dropout mask shared by both terms. Before the switch the dash term is off, so the
layer is exactly LoRA. The dash term has no alpha/r scale. After the switch both terms run as
one rank r + s pair, [scaling B, U_S diag(d)] @ [A; V_S^T]: two matmuls per layer, as LoRA's,
where a second low-rank path cost two more (and their backward) in every adapted matrix.
"""
from __future__ import annotations

import time
import zlib

import torch
import torch.nn.functional as F
from peft.tuners.lora.layer import LoraLayer, LoraVariant
from torch import nn

from . import export, tsd
from .export import lora_layers
from .hooks import Hooks


class DashState(nn.Module):
    def __init__(self, out_features: int, in_features: int, s: int, like: torch.Tensor):
        super().__init__()
        kw = {"device": like.device, "dtype": like.dtype}
        self.d = nn.Parameter(torch.zeros(s, **kw))
        self.register_buffer("U_S", torch.zeros(out_features, s, **kw))
        self.register_buffer("V_S", torch.zeros(in_features, s, **kw))
        self.register_buffer("indices", torch.full((s,), -1, dtype=torch.long, device=like.device))
        # `on` is what forward reads: a Python flag, so no step syncs the device to test a
        # tensor. The `active` buffer carries it through checkpoints (`restored` reads it back).
        self.register_buffer("active", torch.zeros((), dtype=torch.bool, device=like.device))
        self.on = False

    def turn_on(self) -> None:
        self.active.fill_(True)
        self.on = True

    def restored(self) -> None:
        """Called after the buffers were overwritten from a checkpoint (one sync, not per step)."""
        self.on = bool(self.active)

    def fused(self, A: torch.Tensor, B: torch.Tensor, scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
        """LoRA's factors and the dash's as one pair (down: r + s x in, up: out x r + s), built
        in the graph so gradients reach A, B and d as through two paths; U_S, V_S stay frozen."""
        down = torch.cat([A, self.V_S.T.to(A.dtype)])
        up = torch.cat([B * scaling, (self.U_S * self.d).to(B.dtype)], dim=1)
        return down, up

    def delta_weight(self) -> torch.Tensor:
        return (self.U_S * self.d) @ self.V_S.T if self.on else torch.zeros(
            self.U_S.shape[0], self.V_S.shape[0], device=self.d.device, dtype=self.d.dtype)


def _dash_delta(module: LoraLayer, adapter: str, dtype) -> torch.Tensor:
    return module.lora_dash[adapter].delta_weight().to(dtype)


class DashVariant(LoraVariant):
    @staticmethod
    def init(module, adapter_name, **kwargs):  # state is attached by attach()
        pass

    @staticmethod
    def forward(module, active_adapter, x, result, **kwargs):
        A, B = module.lora_A[active_adapter], module.lora_B[active_adapter]
        dx = module.lora_dropout[active_adapter](x)
        scaling = module.scaling[active_adapter]
        state = module.lora_dash[active_adapter]
        if not state.on:  # peft's LoRA, operation for operation
            return result + B(A(dx)) * scaling
        down, up = state.fused(A.weight, B.weight, scaling)
        return result + F.linear(F.linear(dx, down), up)

    @staticmethod
    def merge_safe(module, active_adapter, orig_weight):
        delta = module.get_delta_weight(active_adapter) + _dash_delta(module, active_adapter, orig_weight.dtype)
        return orig_weight + delta.to(orig_weight.dtype)

    @staticmethod
    def merge_unsafe(module, active_adapter, orig_weight):
        delta = module.get_delta_weight(active_adapter) + _dash_delta(module, active_adapter, orig_weight.dtype)
        orig_weight.data += delta.to(orig_weight.dtype)

    @staticmethod
    def unmerge(module, active_adapter, orig_weight):
        delta = module.get_delta_weight(active_adapter) + _dash_delta(module, active_adapter, orig_weight.dtype)
        return orig_weight - delta.to(orig_weight.dtype)


def attach(model, s: int, adapter: str = "default") -> None:
    """Give every LoRA layer an inactive dash state (d = 0): the model is still exactly LoRA."""
    for _, layer in lora_layers(model, adapter):
        if getattr(layer, "fan_in_fan_out", False):
            raise NotImplementedError("LoRA-Dash needs nn.Linear layers (fan_in_fan_out=False)")
        if layer.lora_B[adapter].bias is not None:  # the fused pair has no place for lora_bias
            raise NotImplementedError("LoRA-Dash needs LoRA without a bias (lora_bias=False)")
        base = layer.get_base_layer()
        if not hasattr(layer, "lora_dash"):
            layer.lora_dash = nn.ModuleDict()
        size = min(s, base.out_features, base.in_features)
        layer.lora_dash[adapter] = DashState(base.out_features, base.in_features, size, layer.lora_A[adapter].weight)
        layer.lora_variant[adapter] = DashVariant()


def is_active(model, adapter: str = "default") -> bool:
    return any(layer.lora_dash[adapter].on for _, layer in lora_layers(model, adapter)
               if hasattr(layer, "lora_dash"))


def switch(model, svd_of, factors, adapter: str = "default", select: str = "rate", seed: int = 0) -> dict:
    """Select each layer's top-s directions by change rate (or by an ablation's rule, `select`
    in tsd.SELECTIONS; `random` draws from a stream of the seed and the layer's name) and turn
    the dash term on. `svd_of(name, layer)` is the SVD of the weight that defines the
    directions; `factors(layer)` is the change so far as low-rank factors (B, A), dW = B @ A.
    Returns rates and indices."""
    out = {}
    for name, layer in lora_layers(model, adapter):
        state = layer.lora_dash[adapter]
        dec = svd_of(name, layer)
        with torch.no_grad():
            B, A = factors(layer)
            rates = tsd.change_rates(dec, B, A)
            stream = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            idx = tsd.chosen_directions(dec, rates, state.d.numel(), select, stream)
            state.U_S.copy_(dec.U[:, idx].to(state.U_S))
            state.V_S.copy_(dec.Vh[idx].T.to(state.V_S))
            state.indices.copy_(idx.to(state.indices.device))
            state.turn_on()
        out[name] = {"rates": rates.float().cpu(), "indices": idx.cpu()}
        del dec  # one layer's SVD at a time
    return out


# What tsd.dash_t counts: optimizer steps (ours), or forward calls as the official layer counts them.
T_UNITS = ("step", "forward")


def switch_step(ctx) -> int:
    """The optimizer step after which the dash turns on. `dash_t_unit: step` (the default): t
    steps (t < 1: that share of the run's steps). `forward`: t forward calls as the official
    layer counts them (ctx.forwards: every micro-batch's and every validation batch's; t < 1:
    that share of the forwards up to the last step's), switching after the last step whose
    micro-batches all ran within the first t forwards: the official layer selects in forward
    t + 1, from the dW of the steps completed by then (Forwards.switch_step)."""
    t, unit = ctx.tsd["dash_t"], ctx.tsd.get("dash_t_unit", "step")
    if unit not in T_UNITS:
        raise ValueError(f"tsd.dash_t_unit: unknown value {unit!r}; allowed values: {', '.join(T_UNITS)}")
    if unit == "step":
        return ctx.steps(t)
    if ctx.forwards is None:
        raise ValueError("tsd.dash_t_unit: forward needs the training loop's forward count (ctx.forwards)")
    n = int(t) if t >= 1 else int(round(t * ctx.forwards.through(ctx.total_steps)))
    return ctx.forwards.switch_step(n)


class DashHooks(Hooks):
    """LoRA-Dash: pre-launch as plain LoRA for t optimizer steps (or t forward calls, as the
    official layer counts them: tsd.dash_t_unit), then the dash phase along the directions
    `select` picks (tsd.SELECTIONS: the TSDs, or an ablation's)."""

    exports_via_factors = True

    def __init__(self, select: str = "rate"):
        if select not in tsd.SELECTIONS:
            raise ValueError(f"unknown direction rule {select!r}; allowed values: {', '.join(tsd.SELECTIONS)}")
        self.select = select

    def setup(self, model, ctx):
        attach(model, int(ctx.tsd["dash_s"]))

    def after_step(self, model, step, ctx):
        if step == switch_step(ctx) and not is_active(model):
            t0 = time.perf_counter()
            ctx.analysis["switch"] = switch(model, ctx.svd_of, export.effective_factors, select=self.select,
                                            seed=ctx.seed)
            ctx.timings["switch_s"] = time.perf_counter() - t0
            ctx.timings["switch_step"] = step
            print(f"[lora-dash] switched at step {step}: {len(ctx.analysis['switch'])} layers, "
                  f"{ctx.timings['switch_s']:.2f} s; {ctx.cache.report()}")
            return True
        return False
