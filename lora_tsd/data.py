"""Task data: normalised examples, the deterministic train/test carve of the embedded
validation splits, and tokenisation for training."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from . import atomic
from .tasks import TASKS


def test_bucket(example: dict, salt: str) -> float:
    """A number in [0, 1) fixed by the example's content and the salt: identical examples
    always land on the same side, so the carve is disjoint and reproducible anywhere."""
    blob = json.dumps(example, sort_keys=True, ensure_ascii=False)
    digest = hashlib.sha256(f"{salt}\x00{blob}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def carve(examples: list[dict], test_fraction: float, salt: str) -> tuple[list[dict], list[dict]]:
    train, test, seen = [], [], set()
    for ex in examples:
        key = json.dumps(ex, sort_keys=True)
        if key in seen:  # exact duplicates would only inflate one side
            continue
        seen.add(key)
        (test if test_bucket(ex, salt) < test_fraction else train).append(ex)
    return train, test


def _rows(task: str, source: str, raw: str | Path | None, split: str | None = None):
    import datasets

    if source == "embedded":
        return datasets.load_from_disk(str(raw))
    hub = TASKS[task].hub
    return datasets.load_dataset(hub.path, hub.name, split=split)


def prepare(task: str, source: str, split_cfg: dict, out: str | Path, raw: str | Path | None = None) -> dict:
    """Write <out>/train.jsonl, <out>/test.jsonl and <out>/split.json; returns the manifest."""
    spec = TASKS[task]
    if source == "embedded":
        examples = [spec.to_example(r) for r in _rows(task, source, raw)]
        train, test = carve(examples, split_cfg["test_fraction"], split_cfg["salt"])
        how = (f"embedded validation split ({len(examples)} rows) carved by sha256(salt, example) "
               f"< {split_cfg['test_fraction']} -> test")
    else:
        train = [spec.to_example(r) for r in _rows(task, source, None, spec.hub.train_split)]
        test = [spec.to_example(r) for r in _rows(task, source, None, spec.hub.test_split)]
        how = f"hub {spec.hub.path}/{spec.hub.name}: {spec.hub.train_split} -> train, {spec.hub.test_split} -> test"
    manifest = {"task": task, "source": source, "salt": split_cfg.get("salt"), "how": how,
                "n_train": len(train), "n_test": len(test)}
    with atomic.directory(out) as tmp:
        for name, rows in (("train", train), ("test", test)):
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            (tmp / f"{name}.jsonl").write_text(text)
            manifest[f"sha256_{name}"] = hashlib.sha256(text.encode()).hexdigest()
        (tmp / "split.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def encode_example(tokenizer, example: dict, max_length: int) -> dict:
    """Prompt plus gold answer, split the way lm-eval scores a continuation: the answer's
    tokens are whole(prompt + " " + answer) minus the prompt's tokens. Loss falls on the
    answer only; over-long examples lose tokens from the left."""
    context = example["query"]
    continuation = " " + example["choices"][example["gold"]]
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    n_ctx = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    labels = [-100] * n_ctx + whole[n_ctx:]
    return {"input_ids": whole[-max_length:], "labels": labels[-max_length:]}


def collate(batch: list[dict], pad_id: int, side: str = "right") -> dict:
    """Pad to the longest example. Left padding puts every answer at the end of its row."""
    import torch

    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, b in enumerate(batch):
        n = len(b["input_ids"])
        cols = slice(0, n) if side == "right" else slice(width - n, width)
        ids[i, cols] = torch.tensor(b["input_ids"])
        labels[i, cols] = torch.tensor(b["labels"])
        mask[i, cols] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}
