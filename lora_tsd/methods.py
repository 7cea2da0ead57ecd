"""Method registry: a method is a name, how to build its peft adapter, and optional hooks
(set-up after the adapter is attached, a call after every optimizer step, export). New
methods are entries here, not new code paths in training or the workflow."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch
from peft import EvaConfig, LoraConfig, PeftConfig, VeraConfig, get_peft_model, initialize_lora_eva_weights

from . import dash, export, lora_init, tsd


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


class DashHooks(Hooks):
    """LoRA-Dash: pre-launch as plain LoRA for t optimizer steps, then the dash phase."""

    exports_via_factors = True

    def setup(self, model, ctx):
        dash.attach(model, int(ctx.tsd["dash_s"]))

    def after_step(self, model, step, ctx):
        if step == ctx.steps(ctx.tsd["dash_t"]) and not dash.is_active(model):
            t0 = time.perf_counter()
            ctx.analysis["switch"] = dash.switch(model, ctx.svd_of, export.effective_factors)
            ctx.timings["switch_s"] = time.perf_counter() - t0
            ctx.timings["switch_step"] = step
            print(f"[lora-dash] switched at step {step}: {len(ctx.analysis['switch'])} layers, "
                  f"{ctx.timings['switch_s']:.2f} s; {ctx.cache.report()}")
            return True
        return False


class InitHooks(Hooks):
    """LoRA-Init: estimate the task change, then initialise A and B from the top-r TSDs."""

    exports_via_factors = True

    def setup(self, model, ctx):
        if ctx.resume and "init" in ctx.resume.get("analysis", {}):
            # Never re-select on resume: W is rebuilt from the checkpoint's B0, A0.
            lora_init.rebuild(model, ctx.resume["adapter"], ctx.tsd["init_residualise"])
            ctx.analysis["init"] = ctx.resume["analysis"]["init"]
            print("[lora-init] resumed: W rebuilt from the checkpoint's initial factors (no re-selection)")
            return
        t0 = time.perf_counter()
        n = ctx.steps(ctx.tsd["init_steps"])
        if ctx.tsd["init_estimate"] == "warmup":
            with lora_init.others_kept(model):  # the warm-up may train only A and B's estimate
                ctx.warmup(model, n)
            rates_of = lora_init.warmup_rates
        else:
            rates_of = lora_init.gradient_rates(lora_init.accumulated_gradients(model, ctx.batches(n)))
        ctx.analysis["init"] = lora_init.initialise(model, rates_of, ctx.svd_of, ctx.tsd["init_scale"],
                                                    ctx.tsd["init_residualise"])
        ctx.timings["init_s"] = time.perf_counter() - t0
        ctx.timings["init_steps"] = n
        print(f"[lora-init] {ctx.tsd['init_estimate']} estimate over {n} steps, "
              f"{ctx.timings['init_s']:.2f} s; {ctx.cache.report()}")


class RecordResidualInit(Hooks):
    """For inits that peft residualises itself (PiSSA, OLoRA: W <- W - scaling B0 A0): keep B0, A0
    so the trained change can be exported relative to the original W, as peft converts PiSSA."""

    exports_via_factors = True

    def setup(self, model, ctx):
        for _, layer in dash.lora_layers(model):
            lora_init.remember_init(layer)


class MiLoRAHooks(Hooks):
    """MiLoRA (Wang et al. 2024): A and B from the r minor singular components, residualised."""

    exports_via_factors = True

    def setup(self, model, ctx):
        for name, layer in dash.lora_layers(model):
            dec, r = ctx.svd_of(name, layer), layer.r["default"]
            idx = torch.arange(dec.S.numel() - r, dec.S.numel())
            B0, A0 = lora_init.init_factors(dec, idx, layer.scaling["default"], "singular")
            lora_init.apply(layer, B0, A0, residualise=True)
            del dec  # one layer's SVD at a time
        print(f"[milora] initialised from minor components; {ctx.cache.report()}")


class EvaHooks(Hooks):
    """EVA: load the state computed by the method's own workflow stage (rule eva_init)."""

    def setup(self, model, ctx):
        saved = torch.load(ctx.stage_input, weights_only=True)
        initialize_lora_eva_weights(model, eva_state_dict=saved["state"], show_progress_bar=False)
        ctx.timings["init_s"] = saved["stage_s"]  # the cell's cost includes the stage it needs


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


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    # (rank, train options, target modules) -> peft config; None trains every weight
    peft_config: Callable[[int, dict, list[str]], PeftConfig] | None
    hooks: Hooks = field(default_factory=Hooks)
    option_group: str | None = None  # config section the method reads besides `train`
    stage: str | None = None  # a workflow rule whose output the method needs before training
    # package modules holding this method's own math: an edit there reruns this method's cells
    # only (codehash); modules every method shares rerun every cell
    modules: tuple[str, ...] = ()

    @property
    def trains_weights(self) -> bool:
        """Every weight trains (full fine-tuning): no adapter, and float32 weights."""
        return self.peft_config is None


def lora_config(rank: int, train: dict, targets: list[str], **extra) -> LoraConfig:
    return LoraConfig(
        r=rank,
        lora_alpha=train["lora_alpha_ratio"] * rank,
        lora_dropout=train["lora_dropout"],
        target_modules=targets,
        bias="none",
        **extra,
    )


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method("lora", "LoRA (Hu et al. 2021) through peft", lora_config),
        Method("rslora", "rsLoRA (Kalajdzievski 2023): scaling alpha / sqrt(r)",
               partial(lora_config, use_rslora=True)),
        Method("dora", "DoRA (Liu et al. 2024): magnitude and direction", partial(lora_config, use_dora=True)),
        Method("pissa", "PiSSA (Meng et al. 2024): principal singular components, residualised",
               partial(lora_config, init_lora_weights="pissa"), RecordResidualInit()),
        Method("olora", "OLoRA (Buyukakyuz 2024): QR-based orthonormal init, residualised",
               partial(lora_config, init_lora_weights="olora"), RecordResidualInit()),
        Method("milora", "MiLoRA (Wang et al. 2024): minor singular components, residualised",
               lora_config, MiLoRAHooks()),
        Method("full", "full fine-tuning (every weight trains): the reference row", None),
        Method("vera", "VeRA (Kopiczko et al. 2024): shared frozen random A, B; trainable scaling vectors",
               lambda r, train, targets: VeraConfig(r=r, target_modules=targets, vera_dropout=train["lora_dropout"])),
        Method("eva", "EVA (Paischer et al. 2024): A from the SVD of layer inputs over training batches",
               partial(lora_config, init_lora_weights="eva", eva_config=EvaConfig(rho=1.0, use_label_mask=False)),
               EvaHooks(), stage="eva_init"),
        Method("lora_dash", "LoRA-Dash (Si et al. 2025): LoRA, then a dash along the top-s TSDs",
               lora_config, DashHooks(), "tsd", modules=("dash",)),
        Method("lora_init", "LoRA-Init (Si et al., arXiv v4): A, B initialised from the top-r TSDs",
               lora_config, InitHooks(), "tsd", modules=("lora_init",)),
        Method("lora_tsd", "LoRA-TSD (Si et al., arXiv v4): LoRA-Init followed by LoRA-Dash",
               lora_config, Chain(InitHooks(), DashHooks()), "tsd", modules=("lora_init", "dash")),
    ]
}


def attach(method: str, model, rank: int, train: dict, targets: list[str], task_type: str | None = None,
           modules_to_save: list[str] | None = None):
    """Wrap a base model with the method's peft adapter (hooks run later, in training);
    a method without a peft config trains the whole model. Classifiers pass task_type SEQ_CLS
    and their head modules, which train in full beside the adapter."""
    if METHODS[method].trains_weights:
        return model.requires_grad_(True)
    model = get_peft_model(model, build_config(method, rank, train, targets, task_type, modules_to_save))
    # What trains stays float32 over bf16 base weights (peft casts its adapter layers; this
    # also covers anything else that trains, such as a head copied from a bf16 model).
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    return model


def build_config(method: str, rank: int, train: dict, targets: list[str], task_type: str | None = None,
                 modules_to_save: list[str] | None = None) -> PeftConfig:
    config = METHODS[method].peft_config(rank, train, targets)
    if task_type is not None:
        config.task_type, config.modules_to_save = task_type, modules_to_save
    return config


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
