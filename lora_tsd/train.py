"""The training loop: plain PyTorch, AdamW with linear warm-up/decay, loss on answer tokens (or
every token), micro-batches, gradient clipping, a validation hold-out. Resumable (checkpoint.py):
batch order is a pure function of (seed, step)."""
from __future__ import annotations

import contextlib
import math
import random
import resource
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from . import atomic, data, distributed, export, faults, methods, models, provenance, tsd
from .checkpoint import (adapter_state, load_adapter_state, mirror_flags, read_checkpoint, restore, rng_state,
                         run_fingerprint, save_checkpoint)
from .export import lora_layers
from .tasks import TASKS, TRAIN_SETS


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Examples for optimizer step `step` (0-based): a fresh seeded shuffle every epoch."""
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return order[k * batch_size:(k + 1) * batch_size].tolist()


def peak_memory_mb(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"peak_gpu_mem_mb": torch.cuda.max_memory_allocated() / 2**20}
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


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
        return Encoded(rows, lambda r: data.encode_classification(tokenizer, r, cfg["max_length"]))
    return Encoded(rows, lambda r: data.encode_example(tokenizer, r, cfg["max_length"], bool(cfg.get("train_on_inputs"))))


def collate(rows: list[dict], pad_id: int, fmt: str, side: str = "left") -> dict:
    """Causal rows are left-padded by default, so every row's answer tokens sit in the last
    columns; classification rows are right-padded."""
    if fmt == "classification":
        return data.collate_classification(rows, pad_id)
    return data.collate(rows, pad_id, side=side)


def make_batch(encoded: list[dict], cfg: dict, seed: int, step: int, pad_id: int, device,
               fmt: str = "causal") -> dict:
    rows = [encoded[i] for i in batch_indices(len(encoded), cfg["batch_size"], seed, step)]
    return {k: v.to(device) for k, v in collate(rows, pad_id, fmt).items()}


def loss_weights(batch: dict, fmt: str) -> list[float]:
    """Each row's weight in its batch's mean loss: its answer tokens for causal LMs (shifted, as
    the loss counts them), 1 for classifiers."""
    if fmt == "classification":
        return [1.0] * batch["input_ids"].shape[0]
    return [float(a) for a in (batch["labels"][:, 1:] != -100).sum(dim=1).tolist()]


def micro_batches(batch: dict, size: int | None, fmt: str, rows: slice = slice(None)) -> list[tuple[dict, float]]:
    """Split one collated batch's `rows` (a data-parallel process's share; all by default)
    into slices of `size` (gradient accumulation), each with its share of the whole batch's
    loss: answer tokens for causal LMs, rows for classifiers, so the summed gradient equals
    the whole batch's (a test checks it). Rows are grouped by length and each slice drops the
    columns that are padding in all its rows: the same sums up to rounding, less work (masked
    columns change nothing; RoPE sees only relative positions). On a CPU, slices of one row
    do no padding work at all (benchmarks/padding.py)."""
    weights = loss_weights(batch, fmt)
    total = sum(weights) or 1.0
    start, stop, _ = rows.indices(len(weights))
    size = min(size or stop - start, stop - start)
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    order = sorted(range(start, stop), key=lambda i: -lengths[i])
    return [(trim_padding({k: v[idx] for k, v in batch.items()}), sum(weights[j] for j in idx) / total)
            for idx in (order[i:i + size] for i in range(0, len(order), size))]


def trim_padding(part: dict) -> dict:
    """Drop the columns where every row is padding (they are masked out of every result)."""
    cols = part["attention_mask"].bool().any(dim=0)
    width = cols.numel()
    return {k: v[:, cols] if v.dim() == 2 and v.shape[1] == width else v for k, v in part.items()}


def total_steps(cfg: dict, n_examples: int) -> int:
    """Optimizer steps of a run: `steps`, or `epochs` passes over the train set (each epoch is
    n // batch_size steps, the batch order's epoch length)."""
    if cfg.get("epochs") is not None:
        return max(1, round(cfg["epochs"] * max(1, n_examples // cfg["batch_size"])))
    return int(cfg["steps"])


def holdout(rows: list, size: int, seed: int = 42) -> tuple[list, list]:
    """(train, validation): `size` rows held out as LLM-Adapters does with
    datasets' `train_test_split(test_size=size, shuffle=True, seed=42)` (the same rows; a test
    compares with datasets)."""
    if not size:
        return list(rows), []
    if size >= len(rows):
        raise ValueError(f"train.val_size {size} leaves no training rows (the train set has {len(rows)})")
    order = np.random.default_rng(seed).permutation(len(rows))
    return [rows[i] for i in order[size:]], [rows[i] for i in order[:size]]


@torch.no_grad()
def validation_loss(model, encoded: list[dict], cfg: dict, pad_id: int, device, amp_dtype, fmt: str) -> float:
    """Mean answer-token loss over the held-out rows (token-weighted across batches), in eval mode."""
    was_training = model.training
    model.eval()
    size = cfg.get("micro_batch_size") or cfg["batch_size"]
    total, weight = 0.0, 0.0
    for i in range(0, len(encoded), size):
        batch = {k: v.to(device) for k, v in collate(encoded[i:i + size], pad_id, fmt).items()}
        w = sum(loss_weights(batch, fmt))
        with _autocast(device, amp_dtype):
            total += float(batch_loss(model, batch, fmt)) * w
        weight += w
    model.train(was_training)
    return total / max(weight, 1.0)


def _autocast(device, amp_dtype):
    return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()


def answer_loss(model, batch: dict) -> torch.Tensor:
    """Mean cross-entropy over answer tokens, computing the LM head only on the last columns
    that hold answers (on a 49k vocabulary the head is ~20% of a step). Equal to the model's
    own loss on the full logits; a test checks it."""
    labels = batch["labels"]
    answer_cols = (labels != -100).any(dim=0).nonzero()
    # One column before the first answer token; a row cut to its answer alone has no label
    # for its first token (nothing precedes it), as in the model's own shifted loss.
    keep = min(labels.shape[1] - int(answer_cols.min()) + 1, labels.shape[1]) if answer_cols.numel() else 1
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   logits_to_keep=keep).logits
    targets = labels[:, labels.shape[1] - keep + 1:]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


def batch_loss(model, batch: dict, fmt: str) -> torch.Tensor:
    """Answer-token cross-entropy for causal LMs; the head's own loss (cross-entropy, or MSE
    for regression) for classifiers."""
    return model(**batch).loss if fmt == "classification" else answer_loss(model, batch)


def train_step(model, batch: dict, cfg: dict, params: list, device, amp_dtype, fmt: str) -> tuple[float, float]:
    """One optimizer step's gradients over micro-batches of the batch (of this process's rows,
    summed over processes when data-parallel); clips the global norm at `max_grad_norm` (None:
    no clipping) as the HF Trainer does. Returns (loss, gradient norm)."""
    loss = 0.0
    rows = distributed.my_rows(batch["input_ids"].shape[0])
    for part, share in micro_batches(batch, cfg.get("micro_batch_size"), fmt, rows):
        with _autocast(device, amp_dtype):
            part_loss = batch_loss(model, part, fmt)
        (part_loss * share).backward()
        loss += float(part_loss.detach()) * share
    distributed.sum_gradients(params)
    loss = distributed.sum_value(loss)
    limit = cfg.get("max_grad_norm")
    norm = torch.nn.utils.clip_grad_norm_(params, limit if limit is not None else float("inf"))
    return loss, float(norm)


def fit(model, tokenizer, examples: list[dict], cfg: dict, seed: int, ckpt: Path | None = None,
        stop_after: int | None = None, device: torch.device | None = None, amp_dtype=None,
        hooks: methods.Hooks | None = None, ctx: methods.Context | None = None, fmt: str = "causal",
        val_examples: list[dict] | None = None) -> dict:
    """Train `model` (already wrapped with its adapter, hooks set up) in place; returns the loss
    curve and timing. `hooks.after_step` runs after every optimizer step (and once before the
    first, for switches at step 0). `stop_after` ends early without finishing (to test resuming).
    With `val_examples`, the held-out loss is recorded every `eval_every` steps (else at the end);
    `keep_best` ends with the adapter of the lowest one, as load_best_model_at_end."""
    device = device or torch.device("cpu")
    hooks = hooks or methods.Hooks()
    encoded = encode(tokenizer, examples, cfg, fmt)
    val_encoded = encode(tokenizer, val_examples, cfg, fmt) if val_examples else []
    steps = total_steps(cfg, len(encoded))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    warmup = round(cfg["warmup_ratio"] * steps) if cfg.get("warmup_ratio") is not None else cfg["warmup_steps"]
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, steps)
    fingerprint = run_fingerprint(cfg, seed, len(encoded), ctx)
    # run() has already read (and fingerprint-checked) the checkpoint into ctx.resume: not again.
    saved = ctx.resume if ctx is not None and ctx.resume is not None else read_checkpoint(ckpt, fingerprint)
    start, losses, curves = restore(saved, model, optimizer, scheduler, ctx) if saved else (0, [], {})
    grad_norms, val_losses = curves.get("grad_norms", []), curves.get("val_losses", [])
    best = curves.get("best")  # {"step", "loss", "state"}: the lowest validation loss so far
    if start == 0:  # each process its own dropout masks (the batch order is seeded apart)
        seed_everything(seed + 1_000_003 * distributed.rank())
    _after_step(hooks, model, start, ctx)
    model.train()
    tokens, t0 = 0, time.perf_counter()
    every = cfg.get("eval_every") or 0
    diverged = None
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="train", mininterval=2,
               disable=not distributed.is_main())
    for step in bar:
        batch = make_batch(encoded, cfg, seed, step, tokenizer.pad_token_id, device, fmt)
        loss, norm = train_step(model, batch, cfg, params, device, amp_dtype, fmt)
        if faults.non_finite(loss, norm):  # stop here: this step's update is never applied
            optimizer.zero_grad(set_to_none=True)
            diverged = {"step": step + 1, "loss": loss, "grad_norm": norm,
                        "last_finite_loss": next((x for x in reversed(losses) if math.isfinite(x)), None)}
            print(f"[train] diverged at step {step + 1}: loss {loss}, grad norm {norm}")
            break
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss)
        grad_norms.append(norm)
        tokens += int(batch["attention_mask"].sum())
        bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        done = step + 1
        _after_step(hooks, model, done, ctx)
        # As the HF Trainer: every `eval_every` steps only; without it, once at the end.
        if val_encoded and (done % every == 0 if every else done == steps):
            val_losses.append([done, validation_loss(model, val_encoded, cfg, tokenizer.pad_token_id, device,
                                                     amp_dtype, fmt)])
            if cfg.get("keep_best") and (best is None or val_losses[-1][1] < best["loss"]):
                best = {"step": done, "loss": val_losses[-1][1], "state": adapter_state(model)}
        if ckpt and (done % cfg.get("checkpoint_every", 25) == 0 or done == stop_after) and done < steps:
            rng = distributed.gather(rng_state())  # every process's dropout stream
            if distributed.is_main():
                save_checkpoint(ckpt, model, optimizer, scheduler, done, losses, fingerprint, ctx,
                                {"grad_norms": grad_norms, "val_losses": val_losses, "best": best}, rng)
            distributed.barrier()
        if stop_after is not None and done >= stop_after:
            break
    elapsed = time.perf_counter() - t0
    model.eval()
    finished = len(losses) == steps and diverged is None
    if finished and best is not None and best["step"] != steps:
        load_adapter_state(model, best["state"])  # as load_best_model_at_end
    return {"losses": losses, "grad_norms": grad_norms, "val_losses": val_losses, "resumed_from_step": start,
            "kept_step": best["step"] if best is not None and finished else None, "diverged": diverged,
            "loop_time_s": elapsed, "tokens_per_s": tokens / elapsed if elapsed > 0 else None,
            "steps": len(losses), "planned_steps": steps}


def _after_step(hooks, model, step: int, ctx) -> None:
    """The hooks' call; when they changed the adapter (LoRA-Dash's switch), every process
    takes rank 0's state, so data-parallel processes never drift apart on an SVD's rounding."""
    if hooks.after_step(model, step, ctx):
        sync_adapter(model)


def sync_adapter(model) -> None:
    """Rank 0's adapter tensors in every data-parallel process (nothing in a single one)."""
    if not distributed.active():
        return
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    distributed.broadcast_tensors([tensors[name] for name in adapter_state(model)])
    mirror_flags(model)


def make_context(tokenizer, examples, cfg: dict, tsd_cfg: dict, seed: int, device, amp_dtype,
                 svd_cache: str | Path | None, stage_input: str | None = None,
                 fmt: str = "causal") -> methods.Context:
    """Hooks' view of the run: a plain-LoRA warm-up and extra batches use their own seed offset."""

    def warmup(m, n):
        sub = {**cfg, "steps": n, "epochs": None, "warmup_ratio": None, "warmup_steps": min(cfg["warmup_steps"], max(n - 1, 0))}
        return fit(m, tokenizer, examples, sub, seed + 7919, device=device, amp_dtype=amp_dtype, fmt=fmt)

    def batches(n):
        encoded = encode(tokenizer, examples, cfg, fmt)
        return [make_batch(encoded, cfg, seed + 7919, k, tokenizer.pad_token_id, device, fmt) for k in range(n)]

    return methods.Context(train=cfg, tsd=tsd_cfg, total_steps=total_steps(cfg, len(examples)),
                           cache=tsd.SVDCache(svd_cache),
                           warmup=warmup, batches=batches, stage_input=stage_input,
                           svd_dtype=torch.float64 if tsd_cfg.get("svd_dtype") == "float64" else torch.float32)


def analysis_arrays(model, ctx: methods.Context) -> dict:
    """Per adapted matrix: singular values, change rates at the end (and at the switch / init
    where the method has them), selected indices. Keys are '<module>|<field>'."""
    out = {}
    for name, layer in lora_layers(model):
        dec = ctx.svd_of(name, layer)
        with torch.no_grad():
            B, A = export.effective_factors(layer)
        key = name.removeprefix("base_model.model.")
        out[f"{key}|singular_values"] = dec.S.float().cpu().numpy()
        out[f"{key}|rates_end"] = tsd.change_rates(dec, B, A).float().cpu().numpy()
        for phase in ("switch", "init"):
            if name in ctx.analysis.get(phase, {}):
                out[f"{key}|rates_{phase}"] = ctx.analysis[phase][name]["rates"].numpy()
                out[f"{key}|indices_{phase}"] = ctx.analysis[phase][name]["indices"].numpy()
        del dec  # one layer's SVD at a time
    return out


def load_base(model_src: str, train_set: str, seed: int, dtype: torch.dtype = torch.float32):
    """The model a train set needs (a causal LM with its frozen weights in `dtype`, or an
    encoder in float32 with a seeded fresh head) and the peft options that go with it
    (classifier heads train beside the adapter)."""
    ts = TRAIN_SETS[train_set]
    if ts.format == "classification":
        base, tokenizer = models.load_classifier(model_src, TASKS[ts.tasks[0]].num_labels, seed)
        return base, tokenizer, {"task_type": "SEQ_CLS", "modules_to_save": models.head_modules(base)}
    base, tokenizer = models.load_causal_lm(model_src, dtype=dtype)
    return base, tokenizer, {}


def base_dtype(cfg: dict, method: str, fmt: str, device) -> torch.dtype:
    """The frozen weights' dtype for a cell: `train.base_dtype` for causal LMs (full fine-tuning
    trains its weights, so float32 under "auto"); encoders stay float32."""
    if fmt == "classification":
        return torch.float32
    trains_weights = methods.METHODS[method].trains_weights
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
    distributed.init()
    device, amp_dtype = models.pick_device()
    cell = f"training {model_name}/{train_set}/{method}/r{rank}/s{seed} on {device}"
    with faults.out_of_memory(cell, faults.train_levers(cfg)):
        result = _run_cell(model_name, model_src, train_set, data_dir, method, rank, seed, cfg, out_adapter,
                           out_metrics, tsd_cfg, svd_cache, out_analysis, stage_input, device, amp_dtype)
    # Only on success: a failed process must not wait at a barrier its peers, mid-collective,
    # never reach; it exits, and torchrun stops the others.
    distributed.finish()
    return result


def uniform_loss(model, fmt: str) -> float | None:
    """The loss of a uniform output: ln V for a causal LM, ln k for a k-class head."""
    n = model.config.vocab_size if fmt == "causal" else getattr(model.config, "num_labels", 1)
    return math.log(n) if n and n > 1 else None


def _run_cell(model_name, model_src, train_set, data_dir, method, rank, seed, cfg, out_adapter, out_metrics,
              tsd_cfg, svd_cache, out_analysis, stage_input, device, amp_dtype) -> dict:
    seed_everything(seed)
    spec, fmt = methods.METHODS[method], TRAIN_SETS[train_set].format
    dtype = base_dtype(cfg, method, fmt, device)
    base, tokenizer, peft_extra = load_base(model_src, train_set, seed, dtype)
    base_params = sum(p.numel() for p in base.parameters())  # the tables' "% of base"
    targets = models.target_modules(base, cfg.get("target_modules"))
    # On the device before the adapter: an init that takes an SVD (PiSSA) runs there.
    model = methods.attach(method, base.to(device), rank, cfg, targets, **peft_extra).to(device)
    if cfg.get("gradient_checkpointing"):
        models.checkpoint_activations(model)
    examples, val_examples = holdout(data.read_jsonl(Path(data_dir) / "train.jsonl"), cfg.get("val_size") or 0)
    ctx = make_context(tokenizer, examples, cfg, tsd_cfg or {}, seed, device, amp_dtype, svd_cache,
                       stage_input, fmt)
    ckpt = Path(out_metrics).parent / "checkpoint" / "state.pt"
    # A resumed run rebuilds an initialisation from its checkpoint instead of redoing it.
    ctx.resume = read_checkpoint(ckpt, run_fingerprint(cfg, seed, len(examples), ctx))
    spec.hooks.setup(model, ctx)
    sync_adapter(model)
    log = fit(model, tokenizer, examples, cfg, seed, ckpt=ckpt, device=device, amp_dtype=amp_dtype,
              hooks=spec.hooks, ctx=ctx, fmt=fmt, val_examples=val_examples)
    # Reported time includes any init stage run inside the cell (LoRA-Init's warm-up).
    log["train_time_s"] = log["loop_time_s"] + ctx.timings.get("init_s", 0.0)
    if not distributed.is_main():
        return {}  # rank 0 writes the run's outputs
    with atomic.directory(out_adapter) as tmp:
        if spec.hooks.exports_via_factors:
            exported = export.export_adapter(model, tmp)
        else:
            model.save_pretrained(tmp)
            exported = {"export_rank": rank}
    if out_analysis:
        t0 = time.perf_counter()
        arrays = analysis_arrays(model, ctx)
        with atomic.file(out_analysis) as tmp:
            np.savez_compressed(tmp, **arrays)
        ctx.timings["analysis_s"] = time.perf_counter() - t0
    metrics = {
        "model": model_name, "train_set": train_set, "method": method, "rank": rank, "seed": seed,
        "train_config": cfg, "tsd_config": tsd_cfg, "target_modules": targets,
        "n_train_examples": len(examples), "n_val_examples": len(val_examples), "trainable_params": methods.trainable_parameters(model),
        "total_params": sum(p.numel() for p in model.parameters()), "base_params": base_params,
        "device": str(device), "amp_dtype": str(amp_dtype) if amp_dtype else "float32",
        "base_dtype": str(dtype).removeprefix("torch."), "processes": distributed.world_size(),
        "final_loss": float(np.mean(log["losses"][-5:])) if log["losses"] else None,
        "loss_flag": None if log["diverged"] else faults.loss_flag(log["losses"], uniform_loss(base, fmt)),
        **log, **exported, **ctx.timings,
        **peak_memory_mb(device), "svd_cache": ctx.cache.report(),
        "packages": provenance.package_versions(), "git_commit": provenance.git_commit(),
        "hardware": provenance.hardware(),
    }
    atomic.write_json(out_metrics, metrics)
    if ckpt.parent.exists():
        # The run is finished: no checkpoint folder is left behind, nor the half-written temp
        # file of a job killed mid-save (a SLURM requeue or preemption can land there).
        shutil.rmtree(ckpt.parent)
    return metrics
