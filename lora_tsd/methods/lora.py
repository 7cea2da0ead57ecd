"""Plain LoRA's peft config, which every LoRA-based method builds on."""
from __future__ import annotations

from peft import LoraConfig, PeftConfig


def lora_config(rank: int, train: dict, targets: list[str], **extra) -> LoraConfig:
    return LoraConfig(
        r=rank,
        lora_alpha=train["lora_alpha_ratio"] * rank,
        lora_dropout=train["lora_dropout"],
        target_modules=targets,
        bias="none",
        **extra,
    )


def for_task(config: PeftConfig, task_type: str | None = None, modules_to_save: list[str] | None = None) -> PeftConfig:
    """A peft config for a classifier (task_type SEQ_CLS, its head modules training in full)."""
    if task_type is not None:
        config.task_type, config.modules_to_save = task_type, modules_to_save
    return config
