"""How much a training step spends on padding: the same batches as the default grid's causal
cells (the real train set and batch order), stepped as one left-padded batch, and as
micro-batches with padding trimmed (by length-sorted groups). Gradients are equal up to
rounding (tests/test_train.py checks it); only the time differs.

    python benchmarks/padding.py [--model resources/models/smollm2-135m-instruct]
                                 [--train-set resources/train_sets/commonsense170k] [--steps 6]

Writes benchmarks/results/padding_<device>.json. Modes alternate step by step so machine
noise hits them alike; medians and their ratio to the padded batch are reported."""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from lora_tsd import data, methods, models, provenance, train

HERE = Path(__file__).resolve().parent


def step_seconds(model, batch, cfg, params) -> float:
    t0 = time.perf_counter()
    train.train_step(model, batch, cfg, params, torch.device("cpu"), None, "causal")
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base, tokenizer = models.load_causal_lm(args.model)
    cfg = {"lora_alpha_ratio": 2, "lora_dropout": 0.0, "batch_size": args.batch_size, "max_length": args.max_length}
    model = methods.attach("lora", base, 8, cfg, models.target_modules(base))
    params = [p for p in model.parameters() if p.requires_grad]
    encoded = train.encode(tokenizer, data.read_jsonl(Path(args.train_set) / "train.jsonl"), cfg, "causal")
    modes = {"padded batch": None, "trimmed, 1 row": 1, "trimmed, 2 rows": 2}
    times = {m: [] for m in modes}
    real = padded = 0
    for step in range(args.steps):
        batch = train.make_batch(encoded, cfg, 0, step, tokenizer.pad_token_id, torch.device("cpu"))
        real += int(batch["attention_mask"].sum())
        padded += batch["attention_mask"].numel()
        for mode, size in modes.items():
            run_cfg = {**cfg, "micro_batch_size": size, "trim_padding": size is not None}
            times[mode].append(step_seconds(model, batch, run_cfg, params))
    med = {m: statistics.median(t[1:] or t) for m, t in times.items()}  # the first step warms up
    result = {"model": args.model, "train_set": args.train_set, "steps": args.steps, "threads": args.threads,
              "padding_share": 1 - real / padded, "median_step_s": med,
              "ratio_to_padded": {m: med[m] / med["padded batch"] for m in modes},
              "git_commit": provenance.git_commit(), "hardware": provenance.hardware()}
    out = HERE / "results" / "padding_cpu.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
