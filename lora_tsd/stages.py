"""Data-driven initialisation stages that run as their own workflow rule before training
(one output per model x train set x rank, shared by every seed)."""
from __future__ import annotations

import time
from pathlib import Path

import torch
from peft import get_eva_state_dict, get_peft_model

from . import atomic, data, methods, models, train
from .tasks import TRAIN_SETS


def eva_init(model_src: str, train_set: str, data_dir: str | Path, rank: int, cfg: dict, out: str | Path,
             n_batches: int = 16, threads: int = 1) -> None:
    """EVA's per-layer SVD of the inputs over the first n_batches training batches (fixed order)."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    device, _ = models.pick_device()
    base, tokenizer, peft_extra = train.load_base(model_src, train_set, seed=0)
    base = base.to(device)  # the SVDs of the inputs run where the model runs
    fmt = TRAIN_SETS[train_set].format
    targets = models.target_modules(base, cfg.get("target_modules"))
    peft_cfg = methods.build_config("eva", rank, cfg, targets, **peft_extra)
    encoded = train.encode(tokenizer, data.read_jsonl(Path(data_dir) / "train.jsonl"), cfg, fmt)
    size = cfg["batch_size"]
    chunks = [encoded[i:i + size] for i in range(0, min(len(encoded), n_batches * size), size)]
    batches = [train.collate(c, tokenizer.pad_token_id, fmt, side="right") for c in chunks]
    keep = ("input_ids", "attention_mask", "token_type_ids")
    batches = [{k: v.to(device) for k, v in b.items() if k in keep} for b in batches]
    # Computed on the peft-wrapped model so the keys are the module names EVA's loader expects.
    state = get_eva_state_dict(get_peft_model(base, peft_cfg), batches, show_progress_bar=False)
    with atomic.file(out) as tmp:
        torch.save({"state": {k: v.cpu() for k, v in state.items()}, "stage_s": time.perf_counter() - t0}, tmp)
