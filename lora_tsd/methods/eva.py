"""EVA (Paischer et al. 2024) through peft: A from the SVD of layer inputs over training batches.
The SVDs run as the method's own workflow stage (rule eva_init, one output per model x train
set x rank, shared by every seed); the cell's hooks load that state."""
from __future__ import annotations

import time
from pathlib import Path

import torch
from peft import EvaConfig, get_eva_state_dict, get_peft_model, initialize_lora_eva_weights

from .. import atomic, models
from ..data import encoding, prepare
from ..data.tasks import TRAIN_SETS
from .hooks import Hooks
from .lora import for_task, lora_config


def peft_config(rank: int, train: dict, targets: list[str]):
    return lora_config(rank, train, targets, init_lora_weights="eva",
                       eva_config=EvaConfig(rho=1.0, use_label_mask=False))


class EvaHooks(Hooks):
    """Load the state computed by the method's own workflow stage (rule eva_init)."""

    def setup(self, model, ctx):
        saved = torch.load(ctx.stage_input, weights_only=True)
        initialize_lora_eva_weights(model, eva_state_dict=saved["state"], show_progress_bar=False)
        ctx.timings["init_s"] = saved["stage_s"]  # the cell's cost includes the stage it needs


def eva_init(model_src: str, train_set: str, data_dir: str | Path, rank: int, cfg: dict, out: str | Path,
             n_batches: int = 16, threads: int = 1) -> None:
    """EVA's per-layer SVD of the inputs over the first n_batches training batches (fixed order)."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    device, _ = models.pick_device()
    base, tokenizer, peft_extra = models.load_for_training(model_src, train_set, seed=0)
    base = base.to(device)  # the SVDs of the inputs run where the model runs
    fmt = TRAIN_SETS[train_set].format
    targets = models.target_modules(base, cfg.get("target_modules"))
    peft_cfg = for_task(peft_config(rank, cfg, targets), **peft_extra)
    encoded = encoding.encode(tokenizer, prepare.read_jsonl(Path(data_dir) / "train.jsonl"), cfg, fmt)
    size = cfg["batch_size"]
    chunks = [encoded[i:i + size] for i in range(0, min(len(encoded), n_batches * size), size)]
    batches = [encoding.collate(c, tokenizer.pad_token_id, fmt, side="right") for c in chunks]
    keep = ("input_ids", "attention_mask", "token_type_ids")
    batches = [{k: v.to(device) for k, v in b.items() if k in keep} for b in batches]
    # Computed on the peft-wrapped model so the keys are the module names EVA's loader expects.
    state = get_eva_state_dict(get_peft_model(base, peft_cfg), batches, show_progress_bar=False)
    with atomic.file(out) as tmp:
        torch.save({"state": {k: v.cpu() for k, v in state.items()}, "stage_s": time.perf_counter() - t0}, tmp)
