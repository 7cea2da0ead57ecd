"""CorDA (Yang et al. 2024) through peft, in its instruction-previewed mode (IPM): A and B from
the top-r singular directions of W times the covariance of its inputs over training rows
(peft's `preprocess_corda` and the layer's own `corda_init`), residualised.

The covariances and their SVDs are the method's workflow stage (rule corda_init, one output per
model x train set x rank, shared by every seed: a layer's inputs do not depend on a classifier's
head); the cell's hooks hand them to peft's initialisation."""
from __future__ import annotations

import time
from pathlib import Path

from peft.tuners.lora.config import CordaConfig
from peft.tuners.lora.corda import CordaEigens, preprocess_corda, target_modules

from . import export, stage
from .lora import lora_config
from .residual import RecordResidualInit

COVARIANCE_ROWS = 128  # training rows whose inputs build each covariance (run one at a time)


def peft_config(rank: int, train: dict, targets: list[str], init: bool | str = True):
    """At attach the adapter starts as LoRA's (peft's "corda" init needs the stage's state on
    the base layers first); the hooks then run peft's CorDA init on every layer."""
    if init is True:
        return lora_config(rank, train, targets)
    return lora_config(rank, train, targets, init_lora_weights=init, corda_config=CordaConfig(corda_method="ipm"))


def corda_init(model_src: str, train_set: str, data_dir: str | Path, rank: int, cfg: dict, out: str | Path,
               rows: int = COVARIANCE_ROWS, threads: int = 1) -> None:
    """peft's CorDA preprocessing over the first `rows` training rows, one row per forward
    (peft's covariance hook takes one unpadded sequence at a time)."""
    s = stage.load(model_src, train_set, data_dir, cfg, seed=0, threads=threads)
    singles = s.batches(rows, 1, labels=False)
    lora_cfg = s.config(peft_config(rank, cfg, s.targets, init="corda"))

    def run_model():
        for batch in singles:
            s.model(**batch)

    preprocess_corda(s.model, lora_cfg, run_model)
    eigens = {name: {"S": m.eigens.S_WC.cpu(), "U": m.eigens.U_WC.cpu(), "V": m.eigens.V_WC.cpu()}
              for name, m in target_modules(s.model, lora_cfg)}
    s.save(out, eigens=eigens, rows=len(singles), batches=len(singles))


class CordaHooks(RecordResidualInit):
    """Put the stage's state where peft's CorDA init reads it, run that init, keep B0, A0."""

    def setup(self, model, ctx):
        started, saved = time.perf_counter(), stage.saved(ctx.stage_input)
        for name, layer in export.lora_layers(model):
            base, e = layer.get_base_layer(), saved["eigens"][stage.base_name(name)]
            device = base.weight.device
            base.eigens = CordaEigens(S_WC=e["S"].to(device), U_WC=e["U"].to(device), V_WC=e["V"].to(device))
            layer.corda_init("default", "corda")
        stage.float32_adapter(model)
        super().setup(model, ctx)
        ctx.timings.update(stage.costs(saved, started))
