"""Method registry: a method is a name, how to build its peft adapter, and optional hooks
(set-up after the adapter is attached, a call after every optimizer step, export), which live
in the method's own module. New methods are entries here, not new code paths in training or
the workflow."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch
from peft import PeftConfig, VeraConfig, get_peft_model

from . import corda, eva, lora_ga, lora_one
from .dash import DashHooks
from .hooks import Chain, Hooks
from .lora import for_task, lora_config
from .lora_init import InitHooks
from .milora import MiLoRAHooks
from .residual import RecordResidualInit


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
    switches: bool = False  # LoRA-Dash's switch: a pre-launch, then directions chosen mid-run
    tsd_options: tuple[str, ...] = ()  # the tsd options it reads (a sweep of another trains it once)

    @property
    def trains_weights(self) -> bool:
        """Every weight trains (full fine-tuning): no adapter, and float32 weights."""
        return self.peft_config is None


# The tsd options each TSD method reads (svd_cache only says where SVDs are kept).
DASH = ("dash_t", "dash_t_unit", "dash_s", "svd_dtype")
INIT = ("init_estimate", "init_steps", "init_scale", "init_residualise", "svd_dtype")

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
               lora_config, MiLoRAHooks(), modules=("methods.milora",)),
        Method("full", "full fine-tuning (every weight trains): the reference row", None),
        Method("vera", "VeRA (Kopiczko et al. 2024): shared frozen random A, B; trainable scaling vectors",
               lambda r, train, targets: VeraConfig(r=r, target_modules=targets, vera_dropout=train["lora_dropout"])),
        Method("eva", "EVA (Paischer et al. 2024): A from the SVD of layer inputs over training batches",
               eva.peft_config, eva.EvaHooks(), stage="eva_init", modules=("methods.eva", "methods.stage")),
        # Data-driven inits nearest to LoRA-Init, each with its own workflow stage.
        Method("lora_ga", "LoRA-GA (Wang et al. 2024) through peft: A, B from the SVD of the full gradient "
               "over training rows, residualised", lora_ga.peft_config, lora_ga.LoraGAHooks(),
               stage="gradient_init", modules=("methods.lora_ga", "methods.stage")),
        Method("corda", "CorDA (Yang et al. 2024, IPM) through peft: A, B from the SVD of W times the input "
               "covariance of training rows, residualised", corda.peft_config, corda.CordaHooks(),
               stage="corda_init", modules=("methods.corda", "methods.stage")),
        Method("lora_one", "LoRA-One (Zhang et al. 2025): A, B from the SVD of the one-step full gradient, "
               "residualised", lora_config, lora_one.LoraOneHooks(), stage="gradient_init",
               modules=("methods.lora_one", "methods.lora_ga", "methods.stage")),
        Method("lora_dash", "LoRA-Dash (Si et al. 2025): LoRA, then a dash along the top-s TSDs",
               lora_config, DashHooks(), "tsd", modules=("methods.dash",), switches=True, tsd_options=DASH),
        # The paper's direction ablations: the same dash along other directions than the TSDs.
        *[Method(f"lora_dash_{rule}", f"LoRA-Dash ablation: the dash along {what} instead of the TSDs",
                 lora_config, DashHooks(rule), "tsd", modules=("methods.dash",), switches=True, tsd_options=DASH)
          for rule, what in (("top", "the top-s singular directions (PiSSA's)"),
                             ("bottom", "the bottom-s live singular directions (MiLoRA's)"),
                             ("random", "s live singular directions drawn at random (seeded)"))],
        Method("lora_init", "LoRA-Init (Si et al., arXiv v4): A, B initialised from the top-r TSDs",
               lora_config, InitHooks(), "tsd", modules=("methods.lora_init",), tsd_options=INIT),
        Method("lora_tsd", "LoRA-TSD (Si et al., arXiv v4): LoRA-Init followed by LoRA-Dash",
               lora_config, Chain(InitHooks(), DashHooks()), "tsd",
               modules=("methods.lora_init", "methods.dash"), switches=True,
               tsd_options=tuple(dict.fromkeys(INIT + DASH))),
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
    return for_task(METHODS[method].peft_config(rank, train, targets), task_type, modules_to_save)


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
