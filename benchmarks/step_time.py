"""LoRA-Dash's step time after the switch as a ratio to peft's plain LoRA, per setting (a model
shape and its base weights' dtype), with the spread over rounds; each method's peak memory; and
the switch's cost with cold and cached SVDs, per matrix and extrapolated to Llama-3-8B.

    python benchmarks/step_time.py [--settings smollm2:float32 llama-1b:bfloat16 ...] [--rounds 10]

Settings: `smollm2` (the embedded SmolLM2-135M, if built) and `llama-1b` (Llama-3.2-1B's shape,
random init: no download), each with float32 or bfloat16 base weights (adapters float32, as in
training; on a GPU under bf16 autocast, as the training loop runs). Within a setting the two
models take alternating AdamW steps, so machine noise hits both alike; the ratio is the ratio of
the median step times, and the spread is that of the per-round ratios (dash step / the LoRA step
beside it). The target is a ratio of at most 1.05 in every setting.

Peak memory: on a GPU, each model's resident bytes plus its step's allocations; on a CPU, a
child process per method builds the model and takes its steps with the peak RSS reset first
(/proc/self/clear_refs), so each figure is that method's alone.

The switch: LoRA-Dash's `dash.switch` over every adapted matrix, first with an empty SVD cache
(cold: each SVD computed) and then from the cache. Llama-3-8B's switch is an estimate: one SVD
of each of its matrix shapes is timed here (random Gaussian, float32) and multiplied by the
number of matrices of that shape; the cached figure divides its entries' bytes by the read rate
measured here.

Writes benchmarks/results/step_time_<device>.json and prints a summary."""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from gpu import LLAMA_SHAPES, SMOLLM2, load_base, resident_bytes
from lora_tsd import models, provenance
from lora_tsd.methods import dash, export, registry, tsd

HERE = Path(__file__).resolve().parent
METHODS = ("lora", "lora_dash")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
DEFAULT_SETTINGS = ["smollm2:float32", "smollm2:bfloat16", "llama-1b:float32", "llama-1b:bfloat16"]
TARGET = 1.05
# Tokens per step (batch x seq) on a CPU: the 1B shape takes a smaller batch so a round stays
# within seconds; on a GPU every shape takes --gpu-batch x --gpu-seq.
CPU_BATCH = {"smollm2": (8, 64), "llama-1b": (2, 64), "llama-small": (2, 64)}  # llama-small: for tests
# Llama-3-8B's adapted matrices (q, k, v, up, down: the official commonsense recipe), (out, in)
# and how many of each: 32 layers.
LLAMA3_8B = {"q_proj": ((4096, 4096), 32), "k_proj": ((1024, 4096), 32), "v_proj": ((1024, 4096), 32),
             "up_proj": ((14336, 4096), 32), "down_proj": ((4096, 14336), 32)}


def log(*msg) -> None:
    print(*msg, file=sys.stderr, flush=True)


def build(shape: str, method: str, dtype, device, rank: int, s: int):
    base = load_base(shape, device, dtype)
    torch.manual_seed(0)
    model = registry.attach(method, base, rank, {"lora_alpha_ratio": 2, "lora_dropout": 0.05},
                            models.target_modules(base)).to(device)
    if method == "lora_dash":
        dash.attach(model, s)
        with torch.no_grad():  # a non-zero LoRA change, as after the pre-launch
            for _, layer in dash.lora_layers(model):
                layer.lora_B["default"].weight.normal_(0, 1e-3)
    return model


def timed_switch(model, cache_dir) -> dict:
    """dash.switch over every matrix with SVDs from `cache_dir`: seconds in all and per matrix
    (the SVD or its read, by shape)."""
    cache, per = tsd.SVDCache(cache_dir), []

    def svd_of(name, layer):
        t0 = time.perf_counter()
        dec = cache.get(export.original_weight(layer))
        per.append((tuple(layer.get_base_layer().weight.shape), time.perf_counter() - t0))
        return dec

    t0 = time.perf_counter()
    dash.switch(model, svd_of, export.effective_factors)
    total = time.perf_counter() - t0
    by_shape = {}
    for shp, sec in per:
        by_shape.setdefault("x".join(map(str, shp)), []).append(sec)
    return {"seconds": total, "matrices": len(per), "computed": cache.misses, "read": cache.hits,
            "svd_s_per_matrix_by_shape": {k: statistics.median(v) for k, v in by_shape.items()},
            "svd_s_sum": sum(sec for _, sec in per)}


def autocast(device):
    _, amp = models.pick_device()  # what the training loop uses: bf16 autocast on a GPU
    return torch.autocast(device.type, dtype=amp) if amp else torch.autocast(device.type, enabled=False)


def step(model, opt, ids, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with autocast(device):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def batch_ids(model, batch: int, seq: int, device):
    vocab = model.get_base_model().config.vocab_size
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(0)).to(device)


def optimizer(model):
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)


def quantiles(values: list[float]) -> dict:
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return {"min": min(values), "q1": q[0], "median": statistics.median(values), "q3": q[2], "max": max(values)}


# ---------------------------------------------------------------- memory


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(args) -> None:
    """One method alone: build it (dash switched from the parent's cache), then reset the peak
    RSS and take the steps. Prints one JSON line."""
    shape, dtype_name = args.memory_child.split(":")
    device = torch.device("cpu")
    model = build(shape, args.memory_method, DTYPES[dtype_name], device, args.rank, args.s)
    if args.memory_method == "lora_dash":
        timed_switch(model, args.svd_cache)
    batch, seq = CPU_BATCH[shape]
    ids, opt = batch_ids(model, batch, seq, device), optimizer(model)
    model.train()
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # what the build and switch freed goes back to the OS
    built = rss_mb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark restarts from here
    for _ in range(2):  # the first creates AdamW's state
        step(model, opt, ids, device)
    peak = rss_mb("VmHWM")
    print(json.dumps({"rss_built_mb": built, "peak_rss_steps_mb": peak, "step_extra_mb": peak - built}))


def cpu_memory(setting: str, method: str, args, cache_dir) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", setting, "--memory-method", method, "--svd-cache",
           str(cache_dir), "--rank", str(args.rank), "--s", str(args.s), "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def gpu_memory(model, opt, ids, device) -> dict:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step(model, opt, ids, device)
    extra = torch.cuda.max_memory_allocated() - before
    return {"resident_mb": resident_bytes(model, opt) / 2**20, "step_extra_mb": extra / 2**20,
            "peak_mb": (resident_bytes(model, opt) + extra) / 2**20}


# ---------------------------------------------------------------- one setting


def bench(setting: str, args, device) -> dict:
    shape, dtype_name = setting.split(":")
    dtype = DTYPES[dtype_name]
    batch, seq = CPU_BATCH[shape] if device.type == "cpu" else (args.gpu_batch, args.gpu_seq)
    nets = {"lora": build(shape, "lora", dtype, device, args.rank, args.s),
            "lora_dash": build(shape, "lora_dash", dtype, device, args.rank, args.s)}
    with tempfile.TemporaryDirectory() as cache_dir:
        cold = timed_switch(nets["lora_dash"], cache_dir)
        cached = timed_switch(nets["lora_dash"], cache_dir)  # the same matrices, read back
        ids = batch_ids(nets["lora"], batch, seq, device)
        opts = {m: optimizer(net) for m, net in nets.items()}
        times = {m: [] for m in METHODS}
        for net in nets.values():
            net.train()
        for i in range(args.warmup + args.rounds):
            for m in METHODS:  # alternating: noise hits both alike
                sec = step(nets[m], opts[m], ids, device)
                if i >= args.warmup:
                    times[m].append(sec)
        if device.type == "cuda":
            memory = {m: gpu_memory(nets[m], opts[m], ids, device) for m in METHODS}
        cache_bytes = sum(p.stat().st_size for p in Path(cache_dir).glob("*.pt"))
        if device.type == "cpu":
            del nets, opts
            gc.collect()
            memory = {m: cpu_memory(setting, m, args, cache_dir) for m in METHODS}
    med = {m: statistics.median(times[m]) for m in METHODS}
    ratio = med["lora_dash"] / med["lora"]
    return {
        "shape": shape, "base_dtype": dtype_name, "batch": batch, "seq": seq,
        "median_step_s": med, "step_s_all": times,
        "step_time_ratio_dash_over_lora": ratio,
        "per_round_ratio": quantiles([d / lo for d, lo in zip(times["lora_dash"], times["lora"])]),
        "target_met": ratio <= TARGET,
        "peak_memory": memory,
        "dash_over_lora_peak_memory": (memory["lora_dash"].get("peak_mb") or memory["lora_dash"]["peak_rss_steps_mb"])
        / (memory["lora"].get("peak_mb") or memory["lora"]["peak_rss_steps_mb"]),
        "switch_cold": cold, "switch_cached": cached,
        "svd_cache_read_mb_per_s": cache_bytes / 2**20 / max(cached["svd_s_sum"], 1e-9),
    }


# ---------------------------------------------------------------- Llama-3-8B's switch, estimated


def llama3_8b_switch(read_mb_per_s: float | None, device) -> dict:
    per_shape, cold, entry_mb = {}, 0.0, 0.0
    g = torch.Generator(device="cpu").manual_seed(0)
    for name, ((out_f, in_f), count) in LLAMA3_8B.items():
        w = torch.randn(out_f, in_f, generator=g).to(device)
        t0 = time.perf_counter()
        tsd.svd(w, torch.float32)
        if device.type == "cuda":
            torch.cuda.synchronize()
        sec = time.perf_counter() - t0
        k = min(out_f, in_f)
        mb = 4 * (out_f * k + k + k * in_f) / 2**20  # U, S, Vh in float32
        per_shape[name] = {"shape": [out_f, in_f], "count": count, "svd_s": sec, "entry_mb": mb}
        cold += count * sec
        entry_mb += count * mb
        log(f"[step_time] Llama-3-8B {name} {out_f}x{in_f}: SVD {sec:.1f} s")
    return {"estimate": True, "how": "one SVD of each matrix shape timed here (random Gaussian, float32) "
            "times the number of matrices of that shape; cached: entries' bytes / the read rate measured here",
            "matrices": sum(c for _, c in LLAMA3_8B.values()), "per_shape": per_shape,
            "switch_s_cold_estimate": cold, "cache_mb": entry_mb,
            "switch_s_cached_estimate": entry_mb / read_mb_per_s if read_mb_per_s else None}


# ---------------------------------------------------------------- main


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS,
                   help="shape:dtype, shape in smollm2, llama-1b; dtype in float32, bfloat16")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--s", type=int, default=8)
    p.add_argument("--rounds", type=int, default=10, help="timed steps per method and setting")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per method first")
    p.add_argument("--gpu-batch", type=int, default=16)
    p.add_argument("--gpu-seq", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-llama3-8b", action="store_true", help="skip the Llama-3-8B switch estimate")
    p.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/step_time_<device>.json")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    p.add_argument("--memory-method", help=argparse.SUPPRESS)
    p.add_argument("--svd-cache", help=argparse.SUPPRESS)
    args = p.parse_args()
    for setting in args.settings:
        shape, _, dtype = setting.partition(":")
        if shape not in CPU_BATCH or dtype not in DTYPES:
            p.error(f"--settings: {setting!r}; allowed: shape in {', '.join(CPU_BATCH)}, dtype in {', '.join(DTYPES)}")
    return args


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        return memory_child(args)
    t_start = time.perf_counter()
    device, _ = models.pick_device()
    results, skipped = {}, {}
    for setting in args.settings:
        if setting.startswith("smollm2") and not SMOLLM2.exists():
            skipped[setting] = f"{SMOLLM2} not built (snakemake --cores all resources/models/{SMOLLM2.name}/config.json)"
            continue
        log(f"[step_time] {setting} ...")
        results[setting] = r = bench(setting, args, device)
        log(f"[step_time] {setting}: LoRA-Dash / LoRA {r['step_time_ratio_dash_over_lora']:.3f} "
            f"(per round {r['per_round_ratio']['q1']:.3f}-{r['per_round_ratio']['q3']:.3f}); switch "
            f"{r['switch_cold']['seconds']:.1f} s cold, {r['switch_cached']['seconds']:.2f} s cached")
    read_rates = [r["svd_cache_read_mb_per_s"] for r in results.values()]
    result = {
        "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(), "rank": args.rank, "s": args.s, "rounds": args.rounds,
        "warmup": args.warmup, "lora_alpha_ratio": 2, "lora_dropout": 0.05, "adapter_dtype": "float32",
        "autocast": "bfloat16" if device.type == "cuda" else None,
        "target_ratio_max": TARGET, "settings": results, "skipped": skipped,
        "settings_missing_target": [k for k, r in results.items() if not r["target_met"]],
        "llama3_8b_switch": None if args.no_llama3_8b else llama3_8b_switch(
            statistics.median(read_rates) if read_rates else None, device),
        "wall_s": time.perf_counter() - t_start,
        "hardware": provenance.hardware(), "packages": provenance.package_versions(),
        "git_commit": provenance.git_commit(),
        "peak_rss_mb_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    out = args.out or HERE / "results" / f"step_time_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for setting, r in results.items():
        print(f"{setting:20s} LoRA-Dash / LoRA {r['step_time_ratio_dash_over_lora']:.3f} "
              f"(medians {r['median_step_s']['lora_dash']:.3f} s / {r['median_step_s']['lora']:.3f} s; "
              f"per-round ratio {r['per_round_ratio']['min']:.3f}..{r['per_round_ratio']['max']:.3f}) "
              f"{'meets' if r['target_met'] else 'MISSES'} <= {TARGET}; peak memory ratio "
              f"{r['dash_over_lora_peak_memory']:.3f}; switch {r['switch_cold']['seconds']:.1f} s cold / "
              f"{r['switch_cached']['seconds']:.2f} s cached ({r['switch_cold']['matrices']} matrices)")
    est = result["llama3_8b_switch"]
    if est:
        print(f"Llama-3-8B switch (estimate, {est['matrices']} matrices): {est['switch_s_cold_estimate']:.0f} s cold, "
              f"{est['switch_s_cached_estimate'] or float('nan'):.0f} s from the cache ({est['cache_mb'] / 1024:.1f} GiB)")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
