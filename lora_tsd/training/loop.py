"""The training loop: plain PyTorch, AdamW with linear warm-up/decay, loss on answer tokens (or
every token), micro-batches, gradient clipping, a validation hold-out. Resumable (checkpoint.py):
batch order is a pure function of (seed, step). One grid cell around it is cell.py's."""
from __future__ import annotations

import contextlib
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from .. import faults
from ..data.encoding import collate, encode
from ..methods.hooks import Context, Forwards, Hooks
from . import collectives
from .checkpoint import (adapter_state, load_adapter_state, mirror_flags, read_checkpoint, restore, rng_state,
                         run_fingerprint, save_checkpoint)


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


def validation_batch_size(cfg: dict) -> int:
    """Rows per validation forward: `val_batch_size`, else the micro-batch (else the batch)."""
    return cfg.get("val_batch_size") or cfg.get("micro_batch_size") or cfg["batch_size"]


def forward_count(cfg: dict, n_examples: int, n_val: int) -> Forwards:
    """The forward calls fit() runs, as one process running the whole batch: each step's
    micro-batches (a batch holds min(batch_size, n) rows, micro_batches() cuts it in slices of
    micro_batch_size), and each validation's batches (every `eval_every` steps, when rows are
    held out; the one at the end without eval_every comes after the last step)."""
    rows = min(cfg["batch_size"], max(n_examples, 1))
    per_validation = math.ceil(n_val / validation_batch_size(cfg)) if n_val else 0
    return Forwards(per_step=math.ceil(rows / min(cfg.get("micro_batch_size") or rows, rows)),
                    val_every=(cfg.get("eval_every") or 0) if n_val else 0, per_validation=per_validation)


def total_steps(cfg: dict, n_examples: int) -> int:
    """Optimizer steps of a run: `steps`, or `epochs` passes over the train set (each epoch is
    n // batch_size steps, the batch order's epoch length)."""
    if cfg.get("epochs") is not None:
        return max(1, round(cfg["epochs"] * max(1, n_examples // cfg["batch_size"])))
    return int(cfg["steps"])


@torch.no_grad()
def validation_loss(model, encoded: list[dict], cfg: dict, pad_id: int, device, amp_dtype, fmt: str) -> float:
    """Mean answer-token loss over the held-out rows (token-weighted across batches), in eval mode."""
    was_training = model.training
    model.eval()
    size = validation_batch_size(cfg)
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
    rows = collectives.my_rows(batch["input_ids"].shape[0])
    for part, share in micro_batches(batch, cfg.get("micro_batch_size"), fmt, rows):
        with _autocast(device, amp_dtype):
            part_loss = batch_loss(model, part, fmt)
        (part_loss * share).backward()
        loss += float(part_loss.detach()) * share
    collectives.sum_gradients(params)
    loss = collectives.sum_value(loss)
    limit = cfg.get("max_grad_norm")
    norm = torch.nn.utils.clip_grad_norm_(params, limit if limit is not None else float("inf"))
    return loss, float(norm)


def fit(model, tokenizer, examples: list[dict], cfg: dict, seed: int, ckpt: Path | None = None,
        stop_after: int | None = None, device: torch.device | None = None, amp_dtype=None,
        hooks: Hooks | None = None, ctx: Context | None = None, fmt: str = "causal",
        val_examples: list[dict] | None = None) -> dict:
    """Train `model` (already wrapped with its adapter, hooks set up) in place; returns the loss
    curve and timing. `hooks.after_step` runs after every optimizer step (and once before the
    first, for switches at step 0). `stop_after` ends early without finishing (to test resuming).
    With `val_examples`, the held-out loss is recorded every `eval_every` steps (else at the end);
    `keep_best` ends with the adapter of the lowest one, as load_best_model_at_end."""
    device = device or torch.device("cpu")
    hooks = hooks or Hooks()
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
        seed_everything(seed + 1_000_003 * collectives.process_rank())
    if ctx is not None:  # what LoRA-Dash's forward-counted t reads (a pure function of the step)
        ctx.forwards = forward_count(cfg, len(encoded), len(val_encoded))
    _after_step(hooks, model, start, ctx)
    model.train()
    tokens, t0 = 0, time.perf_counter()
    every = cfg.get("eval_every") or 0
    diverged = None
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="train", mininterval=2,
               disable=not collectives.is_main())
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
            rng = collectives.gather(rng_state())  # every process's dropout stream
            if collectives.is_main():
                save_checkpoint(ckpt, model, optimizer, scheduler, done, losses, fingerprint, ctx,
                                {"grad_norms": grad_norms, "val_losses": val_losses, "best": best}, rng)
            collectives.barrier()
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
    if not collectives.active():
        return
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    collectives.broadcast_tensors([tensors[name] for name in adapter_state(model)])
    mirror_flags(model)
