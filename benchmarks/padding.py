"""How much a training step spends on padding: the default grid's real batches (train set and
batch order) stepped whole, and as micro-batches of 1 row and of half the batch (grouped by
length, all-padding columns dropped: loop.micro_batches). Gradients are equal up to
rounding (tests/test_train.py checks it); only the time differs.

    python benchmarks/padding.py [--model resources/models/smollm2-135m-instruct]
                                 [--train-set resources/train_sets/commonsense170k] [--steps 6]
                                 [--dtype bfloat16]

Frozen weights in --dtype (the default grid's train.base_dtype: bfloat16; the float32 files
carry no suffix). Writes benchmarks/results/padding_cpu_<train set>[_<dtype>].json. Modes alternate step by step so machine
noise hits them alike; medians and their ratio to the padded batch are reported."""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from lora_tsd import models, provenance
from lora_tsd.data import encoding, prepare
from lora_tsd.data.tasks import TRAIN_SETS
from lora_tsd.methods import registry
from lora_tsd.training import loop

HERE = Path(__file__).resolve().parent


def step_seconds(model, batch, cfg, params, fmt) -> float:
    t0 = time.perf_counter()
    loop.train_step(model, batch, cfg, params, torch.device("cpu"), None, fmt)
    for p in params:
        p.grad = None
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resources/models/smollm2-135m-instruct")
    parser.add_argument("--train-set", default="resources/train_sets/commonsense170k")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", choices=sorted(models.DTYPES), default="bfloat16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    name = Path(args.train_set).name
    fmt = TRAIN_SETS[name].format
    if fmt == "classification":
        args.dtype = "float32"  # encoders always train in float32
    base, tokenizer, extra = models.load_for_training(args.model, name, 0, dtype=models.DTYPES[args.dtype])
    cfg = {"lora_alpha_ratio": 2, "lora_dropout": 0.0, "batch_size": args.batch_size, "max_length": args.max_length}
    model = registry.attach("lora", base, 8, cfg, models.target_modules(base), **extra)
    params = [p for p in model.parameters() if p.requires_grad]
    encoded = encoding.encode(tokenizer, prepare.read_jsonl(Path(args.train_set) / "train.jsonl"), cfg, fmt)
    half = max(1, args.batch_size // 2)
    modes = {"whole batch": None, "1 row": 1, f"{half} rows": half}
    times = {m: [] for m in modes}
    real = padded = 0
    for step in range(args.steps):
        batch = loop.make_batch(encoded, cfg, 0, step, tokenizer.pad_token_id, torch.device("cpu"), fmt)
        real += int(batch["attention_mask"].sum())
        padded += batch["attention_mask"].numel()
        for mode, size in modes.items():
            times[mode].append(step_seconds(model, batch, {**cfg, "micro_batch_size": size}, params, fmt))
    med = {m: statistics.median(t[1:] or t) for m, t in times.items()}  # the first step warms up
    result = {"model": args.model, "train_set": args.train_set, "dtype": args.dtype, "steps": args.steps,
              "threads": args.threads,
              "padding_share": 1 - real / padded, "median_step_s": med,
              "ratio_to_whole_batch": {m: med[m] / med["whole batch"] for m in modes},
              "git_commit": provenance.git_commit(), "hardware": provenance.hardware()}
    out = HERE / "results" / f"padding_cpu_{name}{'' if args.dtype == 'float32' else '_' + args.dtype}.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
