"""LoRA-Dash step time after the switch, as a ratio to peft's plain LoRA on the same model
in the same process, plus the one-off cost of the switch (SVD cold and from the cache).

    python benchmarks/step_time.py [--model resources/models/smollm2-135m-instruct] [--rank 8]

Writes benchmarks/results/step_time_<device>.json and prints a summary. Steps alternate
between the two models so machine noise hits both alike; the ratio of medians is reported."""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lora_tsd import models, provenance
from lora_tsd.methods import dash, export, registry, tsd

HERE = Path(__file__).resolve().parent


def build(method: str, model_dir: str | None, rank: int, s: int, device):
    if model_dir:
        base, _ = models.load_causal_lm(model_dir)
    else:
        from lora_tsd.tiny import make_llama

        base = make_llama(vocab_size=1000, hidden_size=256, num_layers=4, intermediate_size=512)
    cfg = {"lora_alpha_ratio": 2, "lora_dropout": 0.05}
    torch.manual_seed(0)
    model = registry.attach(method, base, rank, cfg, models.target_modules(base)).to(device)
    if method == "lora_dash":
        dash.attach(model, s)
    return model


def switch_seconds(model, cache_dir) -> float:
    cache = tsd.SVDCache(cache_dir)
    with torch.no_grad():  # a non-zero LoRA update, as after pre-launch
        for _, layer in dash.lora_layers(model):
            layer.lora_B["default"].weight.normal_(0, 1e-3)
    t0 = time.perf_counter()
    dash.switch(model, lambda n, l: cache.get(export.original_weight(l)), export.effective_factors)
    return time.perf_counter() - t0


def step(model, opt, batch, device, amp):
    t0 = time.perf_counter()
    ctx = torch.autocast(device.type, dtype=amp) if amp else torch.autocast(device.type, enabled=False)
    with ctx:
        loss = model(**batch).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_model = Path("resources/models/smollm2-135m-instruct")
    p.add_argument("--model", default=str(default_model) if default_model.exists() else None,
                   help="HF folder or hub id (default: the embedded SmolLM2 if built, else a tiny Llama)")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--s", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device, amp = models.pick_device()

    lora = build("lora", args.model, args.rank, args.s, device)
    dashed = build("lora_dash", args.model, args.rank, args.s, device)
    with tempfile.TemporaryDirectory() as cache_dir:
        cold = switch_seconds(dashed, cache_dir)
        warm = switch_seconds(build("lora_dash", args.model, args.rank, args.s, device), cache_dir)

    vocab = lora.get_base_model().config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (args.batch, args.seq), generator=g).to(device)
    batch = {"input_ids": ids, "labels": ids}
    opts = {name: torch.optim.AdamW([q for q in m.parameters() if q.requires_grad], lr=1e-5)
            for name, m in (("lora", lora), ("lora_dash", dashed))}
    times = {"lora": [], "lora_dash": []}
    for name, m in (("lora", lora), ("lora_dash", dashed)):
        m.train()
        step(m, opts[name], batch, device, amp)  # warm-up, not timed
    for _ in range(args.rounds):
        for name, m in (("lora", lora), ("lora_dash", dashed)):
            times[name].append(step(m, opts[name], batch, device, amp))

    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "model": args.model or "tiny random Llama (hidden 256, 4 layers)",
        "rank": args.rank, "s": args.s, "batch": args.batch, "seq": args.seq, "rounds": args.rounds,
        "device": str(device), "threads": args.threads, "amp": str(amp) if amp else "float32",
        "median_step_s": med, "step_time_ratio_dash_over_lora": med["lora_dash"] / med["lora"],
        "switch_s_cold_svd": cold, "switch_s_cached_svd": warm,
        "n_matrices": sum(1 for _ in dash.lora_layers(dashed)),
        "hardware": provenance.hardware(), "packages": provenance.package_versions(),
        "git_commit": provenance.git_commit(),
    }
    out = HERE / "results" / f"step_time_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"LoRA-Dash / LoRA step time (after the switch): {result['step_time_ratio_dash_over_lora']:.3f} "
          f"(medians {med['lora_dash']:.3f} s / {med['lora']:.3f} s over {args.rounds} alternating steps)")
    print(f"switch: {cold:.2f} s with cold SVDs, {warm:.2f} s from the cache "
          f"({result['n_matrices']} matrices) -> {out}")


if __name__ == "__main__":
    main()
