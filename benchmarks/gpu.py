"""LoRA and LoRA-Dash training throughput, MFU and peak memory, and greedy generation throughput, on one GPU.

On a machine without a GPU the same runs scaled down (smaller shapes, batches and step counts).

    python benchmarks/gpu.py [--shapes smollm2 llama-1b] [--batch 16] [--seq 256] [--peak-tflops 989]

Training: for each model shape, a LoRA model and a LoRA-Dash model (switched before timing, so
the dash term is on) take alternating AdamW steps on random token batches, so machine noise hits
both alike; medians over the timed steps are reported, and their ratio. Base weights are bf16 on
GPU (adapters float32, bf16 autocast), float32 on CPU.

MFU = model FLOPs per second / the card's bf16 dense peak, with model FLOPs per token
    6 * N + 12 * n_layers * hidden * seq      (PaLM, Chowdhery et al. 2022, appendix B)
where N counts the weights of every matmul (all linear layers including the LM head; a tied
embedding counts once, the embedding lookup is free). The attention term counts the full
seq x seq score and value matmuls (no causal halving). Adapter FLOPs (< 1%) and
gradient-checkpointing recompute are not counted (model FLOPs, not hardware FLOPs). Because
LoRA leaves the base frozen, its weight gradients are never computed and the matmul work done
is nearer 4 * N; `mfu_4n` reports MFU with 4 * N in place of 6 * N for reference.

Generation: a model in eval mode generates --gen-tokens new tokens greedily for --gen-prompts
random prompts of equal length, batched and one prompt at a time.

Prints one JSON object and writes it to benchmarks/results/gpu_<device>.json (or --out). Never
uses the network (HF_HUB_OFFLINE=1)."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported (peft imports it too)

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig  # noqa: E402

from lora_tsd import models, provenance
from lora_tsd.methods import dash, export, registry, tsd

HERE = Path(__file__).resolve().parent
SMOLLM2 = HERE.parent / "resources" / "models" / "smollm2-135m-instruct"
METHODS = ("lora", "lora_dash")

# Random-init Llama shapes built from LlamaConfig (no weights to download).
LLAMA_SHAPES = {
    # Llama-3.2-1B
    "llama-1b": dict(hidden_size=2048, num_hidden_layers=16, intermediate_size=8192, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    # scaled down for the CPU
    "llama-small": dict(hidden_size=512, num_hidden_layers=4, intermediate_size=2048, num_attention_heads=8,
                        num_key_value_heads=2, vocab_size=32000, tie_word_embeddings=True),
}
SHAPES = ("smollm2", *LLAMA_SHAPES)

# bf16 dense (no sparsity) Tensor Core peaks in FLOP/s, from NVIDIA's datasheets (the datasheets
# quote "with sparsity" figures: these are half of those). Matched against
# torch.cuda.get_device_name as whole words, first match wins: PCIe/NVL variants before the SXM
# default, so "A10" does not match "A100" or "A10G", nor "L4" "L40S".
BF16_DENSE_PEAK = [
    ("H200 NVL", 835e12),
    ("GH200", 989e12),
    ("H200", 989e12),  # H200 SXM
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # H100 SXM
    ("H800", 989e12),
    ("B200", 2250e12),  # HGX B200: 4.5 PFLOPS with sparsity
    ("A100", 312e12),  # SXM and PCIe
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10", 125e12),
    ("RTX 4090", 165e12),  # GeForce, FP32 accumulate
]


def log(*msg) -> None:
    """Progress goes to stderr: stdout carries only the JSON object."""
    print(*msg, file=sys.stderr, flush=True)


def bf16_peak(device, override_tflops: float | None) -> tuple[float | None, str]:
    if override_tflops:
        return override_tflops * 1e12, "--peak-tflops"
    if device.type != "cuda":
        return None, "no GPU: MFU not measured"
    name = torch.cuda.get_device_name(device)
    for key, peak in BF16_DENSE_PEAK:
        if re.search(rf"\b{re.escape(key)}\b", name):
            return peak, f"table entry {key!r} for {name!r}"
    return None, f"{name!r} is not in the table: pass --peak-tflops"


# ---------------------------------------------------------------- models


def load_base(shape: str, device, dtype):
    if shape == "smollm2":
        model = AutoModelForCausalLM.from_pretrained(SMOLLM2, dtype=dtype)
    else:
        torch.manual_seed(0)  # the same base weights for both methods
        with torch.device(device):  # random init on the device: fast for the 1B shape
            model = AutoModelForCausalLM.from_config(LlamaConfig(**LLAMA_SHAPES[shape]), dtype=dtype)
    return model.to(device)


def build(shape: str, method: str, args, device, dtype):
    """A peft model for `method`; a lora_dash model comes back switched (dash term on)."""
    base = load_base(shape, device, dtype)
    cfg = {"lora_alpha_ratio": 2, "lora_dropout": 0.05}
    torch.manual_seed(0)
    model = registry.attach(method, base, args.rank, cfg, models.target_modules(base)).to(device)
    # peft casts adapters to float32 over a bf16 base (autocast_adapter_dtype): the optimizer
    # state and the update stay float32, as in the suite's training.
    bad = [n for n, p in model.named_parameters() if p.requires_grad and p.dtype != torch.float32]
    assert not bad, f"trainable parameters not float32: {bad[:3]}"
    if args.gradient_checkpointing:
        models.checkpoint_activations(model)  # as train.gradient_checkpointing does
    switch_s = None
    if method == "lora_dash":
        dash.attach(model, args.s)
        with torch.no_grad():  # a non-zero LoRA change, as after pre-launch, so rates are non-zero
            for _, layer in dash.lora_layers(model):
                layer.lora_B["default"].weight.normal_(0, 1e-3)
        t0 = time.perf_counter()
        dash.switch(model, lambda name, layer: tsd.svd(export.original_weight(layer)), export.effective_factors)
        switch_s = time.perf_counter() - t0
        assert dash.is_active(model)
    return model, switch_s


def matmul_params(base) -> int:
    """Weights of every linear layer, the LM head included (a tied embedding counts once)."""
    return sum(m.weight.numel() for m in base.modules() if isinstance(m, torch.nn.Linear))


def flops_per_token(base, seq: int, n_mult: int = 6) -> float:
    c = base.config
    return n_mult * matmul_params(base) + 12 * c.num_hidden_layers * c.hidden_size * seq


def resident_bytes(model, opt) -> int:
    """Parameters, buffers and optimizer state of one model (shared storage counted once)."""
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [v for state in opt.state.values() for v in state.values() if torch.is_tensor(v)]
    seen, total = set(), 0
    for t in tensors:
        key = (t.device, t.untyped_storage().data_ptr())
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


# ---------------------------------------------------------------- training


def train_step(model, opt, ids, device) -> tuple[float, int | None]:
    """One AdamW step; seconds and, on GPU, the bytes it allocated above what was resident."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if cuda else torch.autocast(device.type, enabled=False)
    t0 = time.perf_counter()
    with ctx:
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return seconds, (torch.cuda.max_memory_allocated() - before) if cuda else None


def bench_shape(shape: str, args, device, dtype, peak) -> dict:
    built = {m: build(shape, m, args, device, dtype) for m in METHODS}
    nets = {m: built[m][0] for m in METHODS}
    opts = {m: torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-5)
            for m, net in nets.items()}
    base = nets["lora"].get_base_model()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, base.config.vocab_size, (args.batch, args.seq), generator=g).to(device)

    times = {m: [] for m in METHODS}
    transient = {m: 0 for m in METHODS}
    raw_peak = {m: 0 for m in METHODS}
    for net in nets.values():
        net.train()
    for i in range(args.warmup + args.steps):
        for m in METHODS:  # alternate, so noise hits both alike
            seconds, extra = train_step(nets[m], opts[m], ids, device)
            if i >= args.warmup:
                times[m].append(seconds)
            if extra is not None:
                transient[m] = max(transient[m], extra)
                raw_peak[m] = max(raw_peak[m], torch.cuda.max_memory_allocated())

    tokens = args.batch * args.seq
    fpt, fpt_4n = flops_per_token(base, args.seq), flops_per_token(base, args.seq, n_mult=4)
    out = {"n_params_base": sum(p.numel() for p in base.parameters()),
           "n_params_matmul": matmul_params(base),
           "model_flops_per_token": fpt, "config": {k: getattr(base.config, k) for k in (
               "hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
               "num_key_value_heads", "vocab_size", "tie_word_embeddings")},
           "methods": {}}
    for m in METHODS:
        step_s = statistics.median(times[m])
        row = {"step_s_median": step_s, "step_s_all": times[m], "tokens_per_s": tokens / step_s,
               "mfu": fpt * tokens / step_s / peak if peak else None,
               "mfu_4n": fpt_4n * tokens / step_s / peak if peak else None,
               "trainable_params": registry.trainable_parameters(nets[m])}
        if device.type == "cuda":
            # The two models are resident together, so the raw peak holds both; the estimate
            # for one model alone is its own weights + optimizer state + its step's allocations.
            row["peak_mem_gb"] = (resident_bytes(nets[m], opts[m]) + transient[m]) / 1e9
            row["peak_mem_gb_both_resident"] = raw_peak[m] / 1e9
        if built[m][1] is not None:
            row["switch_s"] = built[m][1]
        out["methods"][m] = row
    if device.type != "cuda":
        # ru_maxrss is in KiB on Linux; a process-wide high-water mark that cannot be reset
        out["peak_rss_gb_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
        out["peak_mem_note"] = ("CPU: peak RSS of the whole process so far (both models and every "
                                "earlier shape), not per method")
    med = {m: out["methods"][m]["step_s_median"] for m in METHODS}
    out["dash_over_lora_step_time"] = med["lora_dash"] / med["lora"]
    del nets, opts, built, base
    free_memory(device)
    return out


def free_memory(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- generation


def timed_generate(model, prompts: torch.Tensor, batch: int, new_tokens: int, device) -> float:
    """Seconds to generate new_tokens greedily for every prompt, `batch` prompts per call."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(0, len(prompts), batch):
        chunk = prompts[i:i + batch]
        out = model.generate(input_ids=chunk, attention_mask=torch.ones_like(chunk), do_sample=False,
                             max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             pad_token_id=getattr(model.config, "pad_token_id", None) or 0)
        assert out.shape[1] - chunk.shape[1] == new_tokens
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def bench_generation(shape: str, args, device, dtype) -> dict:
    model = load_base(shape, device, dtype).eval()
    g = torch.Generator().manual_seed(1)
    # equal-length prompts, so batching needs no padding
    prompts = torch.randint(0, model.config.vocab_size, (args.gen_prompts, args.gen_prompt_len), generator=g).to(device)
    with torch.inference_mode():
        timed_generate(model, prompts[:2], 2, 4, device)  # warm-up (kernels, allocator)
        batched = timed_generate(model, prompts, args.gen_batch, args.gen_tokens, device)
        single = timed_generate(model, prompts, 1, args.gen_tokens, device)
    n = args.gen_prompts * args.gen_tokens
    del model
    free_memory(device)
    return {"model": shape, "dtype": str(dtype).removeprefix("torch."), "prompts": args.gen_prompts,
            "prompt_len": args.gen_prompt_len, "new_tokens": args.gen_tokens, "batch": args.gen_batch,
            "batched_s": batched, "single_s": single,
            "batched_tokens_per_s": n / batched, "single_tokens_per_s": n / single,
            "batched_over_single_speedup": single / batched}


# ---------------------------------------------------------------- main


def parse_args(gpu: bool):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_shapes = ["smollm2", "llama-1b"] if gpu else ["smollm2", "llama-small"]
    p.add_argument("--shapes", nargs="+", choices=SHAPES, default=default_shapes,
                   help=f"model shapes to train (default here: {' '.join(default_shapes)})")
    p.add_argument("--batch", type=int, default=16 if gpu else 2)
    p.add_argument("--seq", type=int, default=256 if gpu else 64)
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--s", type=int, default=8, help="LoRA-Dash directions per layer")
    p.add_argument("--steps", type=int, default=10 if gpu else 3, help="timed steps per method")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per method first")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="bf16 dense peak of the card in TFLOP/s (overrides the built-in table)")
    p.add_argument("--gen-tokens", type=int, default=32)
    p.add_argument("--gen-prompts", type=int, default=64 if gpu else 8)
    p.add_argument("--gen-batch", type=int, default=32 if gpu else 8)
    p.add_argument("--gen-prompt-len", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--out", type=Path, default=None,
                   help="where the JSON is written (default: benchmarks/results/gpu_<device>.json)")
    return p.parse_args()


def targets(training: dict) -> dict:
    worst = max(((r["dash_over_lora_step_time"], s) for s, r in training.items() if "methods" in r), default=None)
    mfu = training.get("llama-1b", {}).get("methods", {}).get("lora", {}).get("mfu")
    return {"dash_over_lora_max": 1.05, "lora_mfu_min_llama_1b": 0.40,
            "dash_over_lora_worst": {"ratio": worst[0], "shape": worst[1]} if worst else None,
            "dash_over_lora_met": worst[0] <= 1.05 if worst else None,
            "lora_mfu_llama_1b": mfu,
            "lora_mfu_llama_1b_met": mfu >= 0.40 if mfu is not None else None}


def main():
    t_start = time.perf_counter()
    device, _ = models.pick_device()
    gpu = device.type == "cuda"
    args = parse_args(gpu)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if gpu else torch.float32
    peak, peak_source = bf16_peak(device, args.peak_tflops)

    training = {}
    for shape in args.shapes:
        if shape == "smollm2" and not SMOLLM2.exists():
            training[shape] = {"skipped": f"{SMOLLM2} not built (snakemake ... {SMOLLM2.name}/config.json)"}
            continue
        log(f"[gpu.py] training {shape} ...")
        training[shape] = bench_shape(shape, args, device, dtype, peak)
        log(f"[gpu.py] {shape}: dash/lora {training[shape]['dash_over_lora_step_time']:.3f}")

    gen_shape = "smollm2" if SMOLLM2.exists() else ("llama-1b" if gpu else "llama-small")
    log(f"[gpu.py] generation with {gen_shape} ...")
    generation = bench_generation(gen_shape, args, device, dtype)

    result = {
        "device": str(device), "gpu": torch.cuda.get_device_name(device) if gpu else None,
        "shapes_run": [s for s in args.shapes if "methods" in training[s]],
        "settings": {"batch": args.batch, "seq": args.seq, "rank": args.rank, "s": args.s,
                     "timed_steps": args.steps, "warmup_steps": args.warmup,
                     "gradient_checkpointing": args.gradient_checkpointing,
                     "base_dtype": str(dtype).removeprefix("torch."), "adapter_dtype": "float32",
                     "autocast": "bfloat16" if gpu else None, "lora_alpha_ratio": 2, "lora_dropout": 0.05,
                     "threads": torch.get_num_threads()},
        "mfu_formula": "(6 * n_params_matmul + 12 * n_layers * hidden * seq) * tokens / step_s / peak; "
                       "mfu_4n uses 4 * n_params_matmul (frozen base: no weight gradients)",
        "bf16_dense_peak_flops": peak, "peak_source": peak_source,
        "training": training, "generation": generation, "targets": targets(training),
        "wall_s": time.perf_counter() - t_start,
        "hardware": provenance.hardware(), "packages": provenance.package_versions(),
        "git_commit": provenance.git_commit(),
    }
    out = args.out or HERE / "results" / f"gpu_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2)
    out.write_text(text + "\n")
    print(text)
    log(f"[gpu.py] wrote {out}")


if __name__ == "__main__":
    main()
