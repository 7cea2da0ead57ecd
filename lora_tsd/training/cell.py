"""One grid cell: load the base model, attach the method, run its hooks and the loop, export a
standard peft adapter, write the analysis arrays and the metrics record."""
from __future__ import annotations

import math
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from .. import atomic, faults, models, provenance
from ..data.encoding import encode
from ..data.holdout import holdout
from ..data.prepare import read_jsonl
from ..data.tasks import TRAIN_SETS
from ..methods import export, registry, tsd
from ..methods.hooks import Context
from . import collectives
from .analysis import Traced, adapter_changes, analysis_arrays, full_changes, originals
from .checkpoint import read_checkpoint, run_fingerprint
from .loop import fit, make_batch, seed_everything, sync_adapter, total_steps


def base_dtype(cfg: dict, method: str, fmt: str, device) -> torch.dtype:
    """The frozen weights' dtype for a cell: `train.base_dtype` for causal LMs (full fine-tuning
    trains its weights, so float32 under "auto"); encoders stay float32."""
    if fmt == "classification":
        return torch.float32
    trains_weights = registry.METHODS[method].trains_weights
    dtype = models.weights_dtype(cfg.get("base_dtype"), device, trains_weights)
    if trains_weights and dtype != torch.float32:
        raise ValueError(f"config key 'train.base_dtype': {cfg.get('base_dtype')!r} for method {method!r}, "
                         f"which trains every weight; allowed values for it: auto, float32")
    return dtype


def run(model_name: str, model_src: str, train_set: str, data_dir: str | Path, method: str, rank: int,
        seed: int, cfg: dict, out_adapter: str | Path, out_metrics: str | Path, threads: int = 1,
        tsd_cfg: dict | None = None, svd_cache: str | Path | None = None,
        out_analysis: str | Path | None = None, stage_input: str | None = None) -> dict:
    """One grid cell: load, attach the method, train, export a standard peft adapter, write metrics.
    Out of memory, it fails with the cell's levers named."""
    torch.set_num_threads(threads)
    collectives.init()
    device, amp_dtype = models.pick_device()
    cell = f"training {model_name}/{train_set}/{method}/r{rank}/s{seed} on {device}"
    with faults.out_of_memory(cell, faults.train_levers(cfg)):
        result = _run_cell(model_name, model_src, train_set, data_dir, method, rank, seed, cfg, out_adapter,
                           out_metrics, tsd_cfg, svd_cache, out_analysis, stage_input, device, amp_dtype)
    # Only on success: a failed process must not wait at a barrier its peers, mid-collective,
    # never reach; it exits, and torchrun stops the others.
    collectives.finish()
    return result


def uniform_loss(model, fmt: str) -> float | None:
    """The loss of a uniform output: ln V for a causal LM, ln k for a k-class head."""
    n = model.config.vocab_size if fmt == "causal" else getattr(model.config, "num_labels", 1)
    return math.log(n) if n and n > 1 else None


def _run_cell(model_name, model_src, train_set, data_dir, method, rank, seed, cfg, out_adapter, out_metrics,
              tsd_cfg, svd_cache, out_analysis, stage_input, device, amp_dtype) -> dict:
    seed_everything(seed)
    spec, fmt = registry.METHODS[method], TRAIN_SETS[train_set].format
    dtype = base_dtype(cfg, method, fmt, device)
    base, tokenizer, peft_extra = models.load_for_training(model_src, train_set, seed, dtype)
    base_params = sum(p.numel() for p in base.parameters())  # the tables' "% of base"
    targets = models.target_modules(base, cfg.get("target_modules"))
    # On the device before the adapter: an init that takes an SVD (PiSSA) runs there.
    model = registry.attach(method, base.to(device), rank, cfg, targets, **peft_extra).to(device)
    if cfg.get("gradient_checkpointing"):
        models.checkpoint_activations(model)
    examples, val_examples = holdout(read_jsonl(Path(data_dir) / "train.jsonl"), cfg.get("val_size") or 0)
    ctx = make_context(tokenizer, examples, cfg, tsd_cfg or {}, seed, device, amp_dtype, svd_cache,
                       stage_input, fmt)
    ckpt = Path(out_metrics).parent / "checkpoint" / "state.pt"
    # A resumed run rebuilds an initialisation from its checkpoint instead of redoing it.
    ctx.resume = read_checkpoint(ckpt, run_fingerprint(cfg, seed, len(examples), ctx))
    # With `analysis_every`, an adapter snapshots its top change rates, and full fine-tuning
    # measures its final dW* = W - W0 (the true TSDs) against a copy of W0, taken before a
    # resume restores trained weights (a copy the size of the target matrices, so opt-in).
    every = (cfg.get("analysis_every") or 0) if out_analysis else 0
    changes = full_changes(originals(model, targets) if every else {}) if spec.trains_weights else adapter_changes
    hooks = Traced(spec.hooks, every, changes) if every and not spec.trains_weights else spec.hooks
    hooks.setup(model, ctx)
    sync_adapter(model)
    log = fit(model, tokenizer, examples, cfg, seed, ckpt=ckpt, device=device, amp_dtype=amp_dtype,
              hooks=hooks, ctx=ctx, fmt=fmt, val_examples=val_examples)
    # Reported time includes any init stage run inside the cell (LoRA-Init's warm-up).
    log["train_time_s"] = log["loop_time_s"] + ctx.timings.get("init_s", 0.0)
    if not collectives.is_main():
        return {}  # rank 0 writes the run's outputs
    with atomic.directory(out_adapter) as tmp:
        if spec.hooks.exports_via_factors:
            exported = export.export_adapter(model, tmp)
        else:
            model.save_pretrained(tmp)
            exported = {"export_rank": rank}
    if out_analysis:
        t0 = time.perf_counter()
        arrays = analysis_arrays(model, ctx, changes)
        with atomic.file(out_analysis) as tmp:
            np.savez_compressed(tmp, **arrays)
        ctx.timings["analysis_s"] = time.perf_counter() - t0
    metrics = {
        "model": model_name, "train_set": train_set, "method": method, "rank": rank, "seed": seed,
        "train_config": cfg, "tsd_config": tsd_cfg, "target_modules": targets,
        "n_train_examples": len(examples), "n_val_examples": len(val_examples), "trainable_params": registry.trainable_parameters(model),
        "total_params": sum(p.numel() for p in model.parameters()), "base_params": base_params,
        "device": str(device), "amp_dtype": str(amp_dtype) if amp_dtype else "float32",
        "base_dtype": str(dtype).removeprefix("torch."), "processes": collectives.world_size(),
        "final_loss": float(np.mean(log["losses"][-5:])) if log["losses"] else None,
        "loss_flag": None if log["diverged"] else faults.loss_flag(log["losses"], uniform_loss(base, fmt)),
        **log, **exported, **ctx.timings,
        **peak_memory_mb(device), "svd_cache": ctx.cache.report(),
        "packages": provenance.package_versions(), "git_commit": provenance.git_commit(),
        "hardware": provenance.hardware(compute_dtype=amp_dtype or dtype),  # autocast's, else the weights' dtype
    }
    atomic.write_json(out_metrics, metrics)
    if ckpt.parent.exists():
        # The run is finished: no checkpoint folder is left behind, nor the half-written temp
        # file of a job killed mid-save (a SLURM requeue or preemption can land there).
        shutil.rmtree(ckpt.parent)
    return metrics


def peak_memory_mb(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"peak_gpu_mem_mb": torch.cuda.max_memory_allocated() / 2**20}
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def make_context(tokenizer, examples, cfg: dict, tsd_cfg: dict, seed: int, device, amp_dtype,
                 svd_cache: str | Path | None, stage_input: str | None = None,
                 fmt: str = "causal") -> Context:
    """Hooks' view of the run: a plain-LoRA warm-up and extra batches use their own seed offset."""

    def warmup(m, n):
        sub = {**cfg, "steps": n, "epochs": None, "warmup_ratio": None, "warmup_steps": min(cfg["warmup_steps"], max(n - 1, 0))}
        return fit(m, tokenizer, examples, sub, seed + 7919, device=device, amp_dtype=amp_dtype, fmt=fmt)

    def batches(n):
        encoded = encode(tokenizer, examples, cfg, fmt)
        return [make_batch(encoded, cfg, seed + 7919, k, tokenizer.pad_token_id, device, fmt) for k in range(n)]

    return Context(train=cfg, tsd=tsd_cfg, total_steps=total_steps(cfg, len(examples)),
                   cache=tsd.SVDCache(svd_cache),
                   warmup=warmup, batches=batches, stage_input=stage_input, seed=seed,
                   svd_dtype=torch.float64 if tsd_cfg.get("svd_dtype") == "float64" else torch.float32)
