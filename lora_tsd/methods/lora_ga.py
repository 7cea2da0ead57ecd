"""LoRA-GA (Wang et al. 2024) through peft: A and B from the SVD of the full fine-tuning
gradient averaged over training batches (peft's `preprocess_loraga` and the layer's own
`lora_ga_init`, with peft's defaults: direction ArB2r, scale stable, gamma 16), residualised.

The gradient is the method's workflow stage (rule gradient_init, one output per model x train
set x seed, shared by every rank: a classifier's fresh head, drawn from the seed, shapes it);
the cell's hooks hand it to peft's initialisation."""
from __future__ import annotations

import time
from pathlib import Path

from peft import LoraGAConfig
from peft.tuners.lora.loraga import get_target_modules, preprocess_loraga

from . import export, stage
from .lora import lora_config
from .residual import RecordResidualInit

GRADIENT_ROWS = 32  # training rows the gradient is averaged over (LoRA-One's official: 8)


def peft_config(rank: int, train: dict, targets: list[str]):
    return lora_config(rank, train, targets, init_lora_weights="lora_ga", lora_ga_config=LoraGAConfig())


def gradient_init(model_src: str, train_set: str, data_dir: str | Path, cfg: dict, seed: int, out: str | Path,
                  rows: int = GRADIENT_ROWS, threads: int = 1) -> None:
    """The mean over the cell's first `rows` training rows of each row's gradient of its loss
    w.r.t. every adapted W, one row per backward (LoRA-One's official batch of 1: no padding,
    and no batch or micro-batch setting changes it), estimated by peft."""
    s = stage.load(model_src, train_set, data_dir, cfg, seed, threads)
    batches = s.batches(rows, 1)
    lora_cfg = s.config(peft_config(8, cfg, s.targets))  # the rank plays no part in the gradient

    def train_step():
        for batch in batches:
            s.model(**batch).loss.backward()

    preprocess_loraga(s.model, lora_cfg, train_step)
    grads = {name: m._peft_loraga_grad.float().cpu() for name, m in get_target_modules(s.model, lora_cfg)}
    s.save(out, grads=grads, rows=sum(len(b["input_ids"]) for b in batches), batches=len(batches))


class LoraGAHooks(RecordResidualInit):
    """Hand the stage's gradients to peft's per-layer LoRA-GA init, then keep B0, A0 (export)."""

    def setup(self, model, ctx):
        started, saved = time.perf_counter(), stage.saved(ctx.stage_input)
        ga_config = model.peft_config["default"].lora_ga_config
        for name, layer in export.lora_layers(model):
            base = layer.get_base_layer()
            base._peft_loraga_grad = saved["grads"][stage.base_name(name)].to(base.weight.device)
            layer.lora_ga_init("default", ga_config)
        stage.float32_adapter(model)
        super().setup(model, ctx)
        ctx.timings.update(stage.costs(saved, started))
