"""Tokenising and collating rows for training and scoring: a train-set row becomes input ids
and labels (loss on the answer, or on every token), rows become padded batches; causal rows
are tokenised when first used."""
from __future__ import annotations

from collections.abc import Sequence

from . import prompts


def prompt_and_response(tokenizer, row: dict) -> tuple[str, str]:
    """A train-set row rendered by build_train_set {prompt, response} -> (prompt, response + EOS,
    so generation learns to stop); an Alpaca row {instruction, input, output} gets the Alpaca
    template; a multiple-choice row {query, choices, gold} -> (query, " " + gold choice), the
    split lm-eval scores."""
    if "prompt" in row:
        return row["prompt"], row["response"] + tokenizer.eos_token
    if "instruction" in row:
        return prompts.alpaca(row["instruction"], row.get("input") or ""), row["output"] + tokenizer.eos_token
    return row["query"], " " + row["choices"][row["gold"]]


def encode_example(tokenizer, example: dict, max_length: int, train_on_inputs: bool = False) -> dict:
    """Prompt plus response, split the way lm-eval scores a continuation: the response's
    tokens are whole(prompt + response) minus the prompt's tokens. Loss falls on the
    response only, or on every token with `train_on_inputs` (LLM-Adapters' default, which the
    paper's runs kept); over-long examples lose tokens from the left."""
    context, continuation = prompt_and_response(tokenizer, example)
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    n_ctx = 0 if train_on_inputs else len(tokenizer(context, add_special_tokens=False)["input_ids"])
    labels = [-100] * n_ctx + whole[n_ctx:]
    return {"input_ids": whole[-max_length:], "labels": labels[-max_length:]}


def collate_causal(batch: list[dict], pad_id: int, side: str = "right") -> dict:
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


def encode_classification(tokenizer, example: dict, max_length: int) -> dict:
    """A sentence (pair) and its label, truncated to max_length tokens."""
    enc = tokenizer(example["text"], example.get("text_pair"), truncation=True, max_length=max_length)
    return {**{k: list(v) for k, v in enc.items()}, "label": example["label"]}


def collate_classification(batch: list[dict], pad_id: int) -> dict:
    """Right-padded ids, mask (and token types when the tokenizer makes them), float labels for
    regression, integer labels for classes."""
    import torch

    width = max(len(b["input_ids"]) for b in batch)
    out = {}
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        if key in batch[0]:
            fill = pad_id if key == "input_ids" else 0
            out[key] = torch.tensor([b[key] + [fill] * (width - len(b[key])) for b in batch])
    labels = [b["label"] for b in batch]
    out["labels"] = torch.tensor(labels, dtype=torch.float if isinstance(labels[0], float) else torch.long)
    return out


class Encoded(Sequence):
    """Rows tokenised when first used: a run of a few steps over a large train set (the
    default grid reads 80 of ~10k Commonsense rows) does not tokenise the rest."""

    def __init__(self, rows: list[dict], encode_one):
        self._rows, self._encode_one, self._done = rows, encode_one, {}

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = range(len(self))[i]
        if i not in self._done:
            self._done[i] = self._encode_one(self._rows[i])
        return self._done[i]


def encode(tokenizer, rows: list[dict], cfg: dict, fmt: str) -> Encoded:
    if fmt == "classification":
        return Encoded(rows, lambda r: encode_classification(tokenizer, r, cfg["max_length"]))
    return Encoded(rows, lambda r: encode_example(tokenizer, r, cfg["max_length"], bool(cfg.get("train_on_inputs"))))


def collate(rows: list[dict], pad_id: int, fmt: str, side: str = "left") -> dict:
    """Causal rows are left-padded by default, so every row's answer tokens sit in the last
    columns; classification rows are right-padded."""
    if fmt == "classification":
        return collate_classification(rows, pad_id)
    return collate_causal(rows, pad_id, side=side)
