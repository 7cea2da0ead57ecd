"""Method registry: a method is a name and how to build its adapter on a base model.
Later methods (TSD methods, baselines) are entries here, not new code paths."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from peft import LoraConfig, get_peft_model


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    # (rank, train options, target modules) -> peft config
    peft_config: Callable[[int, dict, list[str]], LoraConfig]
    options: dict = field(default_factory=dict)


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
    ]
}


def attach(method: str, model, rank: int, train: dict, targets: list[str]):
    """Wrap a base model with the method's adapter; returns a peft model."""
    spec = METHODS[method]
    return get_peft_model(model, spec.peft_config(rank, train, targets))


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
