"""What a method's workflow stage shares (EVA, CorDA, LoRA-GA, LoRA-One): the cell's base model
loaded as training loads it, the rows the cell trains on (its validation hold-out left out, in
the order that leaves them), and a save that keeps the stage's own time and the data it read, so the cell can
count both as its initialisation cost."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import atomic, models
from ..data import encoding, prepare
from ..data.holdout import holdout
from ..data.tasks import TRAIN_SETS
from .lora import for_task

INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class Stage:
    model: torch.nn.Module
    tokenizer: object
    peft_extra: dict
    targets: list[str]
    encoded: encoding.Encoded
    fmt: str
    device: torch.device
    started: float = field(default_factory=time.perf_counter)

    def config(self, peft_config):
        """A method's peft config for this model (a classifier's task type and head)."""
        return for_task(peft_config, **self.peft_extra)

    def batches(self, n: int, size: int, labels: bool = True) -> list[dict]:
        """The first n batches of `size` of the cell's training rows, in the order its hold-out
    leaves them (the same for every seed);
        without labels, only the model's inputs."""
        chunks = [self.encoded[i:i + size] for i in range(0, min(len(self.encoded), n * size), size)]
        out = [encoding.collate(c, self.tokenizer.pad_token_id, self.fmt, side="right") for c in chunks]
        return [{k: v.to(self.device) for k, v in b.items() if labels and k == "labels" or k in INPUT_KEYS}
                for b in out]

    def save(self, out: str | Path, **state) -> None:
        """The stage's state with its wall time (the cell adds it to its train time)."""
        with atomic.file(out) as tmp:
            torch.save({**state, "stage_s": time.perf_counter() - self.started}, tmp)


def load(model_src: str, train_set: str, data_dir: str | Path, cfg: dict, seed: int = 0,
         threads: int = 1) -> Stage:
    """The base model in float32 where the cell would run, and the cell's own training rows
    (a classifier's fresh head is drawn from `seed`, as the cell draws it)."""
    torch.set_num_threads(threads)
    started = time.perf_counter()
    device, _ = models.pick_device()
    base, tokenizer, peft_extra = models.load_for_training(model_src, train_set, seed=seed)
    base = base.to(device)
    fmt = TRAIN_SETS[train_set].format
    rows, _ = holdout(prepare.read_jsonl(Path(data_dir) / "train.jsonl"), cfg.get("val_size") or 0)
    return Stage(base, tokenizer, peft_extra, models.target_modules(base, cfg.get("target_modules")),
                 encoding.encode(tokenizer, rows, cfg, fmt), fmt, device, started)


def saved(path: str | Path) -> dict:
    """A stage's state, mapped rather than read: a layer's tensors reach memory when used."""
    return torch.load(path, weights_only=True, mmap=True)


def base_name(lora_layer_name: str) -> str:
    """A peft-wrapped layer's name as the bare base model names it."""
    return lora_layer_name.removeprefix("base_model.model.")


def costs(saved: dict, started: float) -> dict:
    """What a cell records of its init: the stage's time plus the cell's own set-up since
    `started` (both counted in its train time), and the rows the stage read."""
    setup_s = time.perf_counter() - started
    return {"init_s": saved["stage_s"] + setup_s, "init_stage_s": saved["stage_s"], "init_setup_s": setup_s,
            "init_rows": saved["rows"], "init_batches": saved["batches"]}


def float32_adapter(model) -> None:
    """peft's inits leave A and B in W's dtype; what trains stays float32 (as attach makes it)."""
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
