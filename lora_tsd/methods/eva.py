"""EVA (Paischer et al. 2024) through peft: A from the SVD of layer inputs over training batches.
The SVDs run as the method's own workflow stage (rule eva_init, one output per model x train
set x rank, shared by every seed); the cell's hooks load that state."""
from __future__ import annotations

import time
from pathlib import Path

from peft import EvaConfig, get_eva_state_dict, get_peft_model, initialize_lora_eva_weights

from . import stage
from .hooks import Hooks
from .lora import lora_config


def peft_config(rank: int, train: dict, targets: list[str]):
    return lora_config(rank, train, targets, init_lora_weights="eva",
                       eva_config=EvaConfig(rho=1.0, use_label_mask=False))


class EvaHooks(Hooks):
    """Load the state computed by the method's own workflow stage (rule eva_init)."""

    def setup(self, model, ctx):
        started, saved = time.perf_counter(), stage.saved(ctx.stage_input)
        initialize_lora_eva_weights(model, eva_state_dict=saved["state"], show_progress_bar=False)
        ctx.timings.update(stage.costs(saved, started))  # the cell's cost includes the stage it needs


def eva_init(model_src: str, train_set: str, data_dir: str | Path, rank: int, cfg: dict, out: str | Path,
             n_batches: int = 16, threads: int = 1) -> None:
    """EVA's per-layer SVD of the inputs over the cell's first n_batches training batches."""
    s = stage.load(model_src, train_set, data_dir, cfg, seed=0, threads=threads)
    batches = s.batches(n_batches, cfg["batch_size"], labels=False)
    # Computed on the peft-wrapped model so the keys are the module names EVA's loader expects.
    state = get_eva_state_dict(get_peft_model(s.model, s.config(peft_config(rank, cfg, s.targets))), batches,
                               show_progress_bar=False)
    s.save(out, state={k: v.cpu() for k, v in state.items()}, rows=sum(len(b["input_ids"]) for b in batches),
           batches=len(batches))
