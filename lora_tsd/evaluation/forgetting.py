"""Forgetting: how much a trained causal-LM cell's mean token cross-entropy on a general-text
sample that no task trains on (data/general_text.py) moved from the untuned base model's.
Each row is tokenised alone (the tokenizer's own special tokens, cut to `max_length` tokens)
and scored alone (no padding, so no batch size can change a score); every token after a row's
first is scored, predicted from the tokens before it, and the mean is over all scored tokens
of the sample (not a mean of row means). forgetting = cell CE - base
CE in nats per token, on the same tokens: positive, the cell fits general text worse."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import atomic, faults, models, provenance
from ..data import general_text


def encode(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Each text's token ids, cut to its first `max_length` tokens."""
    return [tokenizer(text, truncation=True, max_length=max_length)["input_ids"] for text in texts]


def token_hash(ids: list[list[int]]) -> str:
    """What the cell's and the base model's scores must share: the same tokens."""
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]


@torch.no_grad()
def token_ce(model, ids: list[list[int]]) -> dict:
    """Per row, the summed cross-entropy of tokens 2..n given the tokens before each and the
    count of those tokens; `ce` is their total over the total count. Each row is one forward
    pass of its own: in bf16 a batch's padding would shift the scores by rounding (about 1e-3
    nats on SmolLM2), and a row alone is also what keeps the logits' memory small."""
    device = next(model.parameters()).device
    sums, counts = [], []
    for row in ids:
        if len(row) < 2:  # nothing to predict from
            sums.append(0.0)
            counts.append(0)
            continue
        x = torch.tensor([row], dtype=torch.long, device=device)
        logits = model(input_ids=x).logits[0, :-1].float()
        sums.append(float(F.cross_entropy(logits, x[0, 1:], reduction="sum")))
        counts.append(len(row) - 1)
    tokens = sum(counts)
    if tokens == 0:
        raise ValueError("the forgetting sample has no token to score (every row is shorter than 2 tokens)")
    return {"ce": math.fsum(sums) / tokens, "tokens": tokens, "row_tokens": counts, "row_ce_sum": sums}


def score(model_src: str, sample: str | Path, adapter, max_length: int, dtype: torch.dtype) -> dict:
    """The mean token CE of the base model (adapter None) or a cell on the sample."""
    texts, manifest = general_text.read_sample(sample)
    model, tokenizer = models.load_for_eval(model_src, adapter, "causal", dtype=dtype)
    model = model.to(models.pick_device()[0])
    ids = encode(tokenizer, texts, max_length)
    scored = token_ce(model, ids)
    return {**scored, "token_sha256": token_hash(ids), "sample": manifest}


def run(model_name: str, model_src: str, sample: str | Path, adapter: str | Path | None, options: dict,
        out: str | Path, run_info: dict, base: str | Path | None = None, threads: int = 1) -> dict:
    """Score and write the record (atomically). `options`: max_length and dtype (eval.dtype's
    values). A cell passes `base`, the base model's record on the same sample:
    its forgetting is the difference, and the two must have scored the same tokens."""
    torch.set_num_threads(threads)
    dtype = models.weights_dtype(options.get("dtype"), models.pick_device()[0])
    diverged = run_info.get("train", {}).get("diverged")
    record = {"model": model_name, **run_info, "diverged": diverged, "max_length": options["max_length"],
              "dtype": str(dtype).removeprefix("torch.")}
    if diverged:  # a result to report, not a model to score
        record.update(ce=None, forgetting=None, sample=general_text.read_sample(sample)[1])
    else:
        what = f"scoring {model_name} {run_info.get('method', 'base')} on the forgetting sample"
        levers = [f"forgetting.max_length (now {options['max_length']}): shorter rows (changes results)",
                  "a larger GPU for this rule (the profile's gpu_model / mem_mb)"]
        with faults.out_of_memory(what, levers):
            scored = score(model_src, sample, adapter, options["max_length"], dtype)
        record.update(ce=scored["ce"], tokens=scored["tokens"], token_sha256=scored["token_sha256"],
                      sample=scored["sample"], rows={"tokens": scored["row_tokens"], "ce_sum": scored["row_ce_sum"]})
        if base is not None:
            ref = json.loads(Path(base).read_text())
            if (ref.get("token_sha256"), ref.get("dtype")) != (record["token_sha256"], record["dtype"]):
                raise ValueError(f"{base} scored other tokens or another dtype ({ref.get('token_sha256')}, "
                                 f"{ref.get('dtype')}) than this cell ({record['token_sha256']}, {record['dtype']}): "
                                 f"rerun the base model's forgetting rule")
            record.update(base_ce=ref["ce"], forgetting=record["ce"] - ref["ce"])
    record.update(packages=provenance.package_versions(), git_commit=provenance.git_commit(),
                  hardware=provenance.hardware(compute_dtype=dtype))
    atomic.write_json(out, record)
    return record
