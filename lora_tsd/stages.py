"""Data-driven initialisation stages that run as their own workflow rule before training
(one output per model x task x rank, shared by every seed)."""
from __future__ import annotations

from pathlib import Path

import torch
from peft import get_eva_state_dict, get_peft_model

from . import atomic, data, methods, models


def eva_init(model_src: str, task_dir: str | Path, rank: int, cfg: dict, out: str | Path,
             n_batches: int = 16, threads: int = 1) -> None:
    """EVA's per-layer SVD of the inputs over the first n_batches training batches (fixed order)."""
    torch.set_num_threads(threads)
    base, tokenizer = models.load_causal_lm(model_src)
    targets = models.target_modules(base, cfg.get("target_modules"))
    peft_cfg = methods.METHODS["eva"].peft_config(rank, cfg, targets)
    examples = data.read_jsonl(Path(task_dir) / "train.jsonl")
    encoded = [data.encode_example(tokenizer, ex, cfg["max_length"]) for ex in examples]
    size = cfg["batch_size"]
    batches = [data.collate(encoded[i:i + size], tokenizer.pad_token_id)
               for i in range(0, min(len(encoded), n_batches * size), size)]
    batches = [{"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]} for b in batches]
    # Computed on the peft-wrapped model so the keys are the module names EVA's loader expects.
    state = get_eva_state_dict(get_peft_model(base, peft_cfg), batches, show_progress_bar=False)
    with atomic.file(out) as tmp:
        torch.save(state, tmp)
