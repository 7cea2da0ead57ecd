"""The training loop: plain PyTorch, AdamW with linear warm-up/decay, loss on answer tokens.
Resumable: a checkpoint every `checkpoint_every` steps holds the trainable weights, optimizer,
scheduler and RNG states, and batch order is a pure function of (seed, step)."""
from __future__ import annotations

import contextlib
import os
import random
import resource
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from . import atomic, data, methods, models, provenance


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


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(path: Path, model, optimizer, scheduler, step: int, losses: list, fingerprint: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"fingerprint": fingerprint, "step": step, "losses": losses,
                "trainable": trainable_state(model), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": _rng_state()}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model, optimizer, scheduler, fingerprint: str):
    """Returns (step, losses) from a matching checkpoint, or (0, []) when there is none."""
    if not path.exists():
        return 0, []
    ckpt = torch.load(path, weights_only=False)
    if ckpt["fingerprint"] != fingerprint:
        print(f"[train] ignoring checkpoint {path}: it belongs to a different run config")
        return 0, []
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in ckpt["trainable"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    _set_rng_state(ckpt["rng"])
    print(f"[train] resumed from {path} at step {ckpt['step']}")
    return ckpt["step"], ckpt["losses"]


def peak_memory_mb(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"peak_gpu_mem_mb": torch.cuda.max_memory_allocated() / 2**20}
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def fit(model, tokenizer, examples: list[dict], cfg: dict, seed: int, ckpt: Path | None = None,
        stop_after: int | None = None, device: torch.device | None = None, amp_dtype=None) -> dict:
    """Train `model` (already wrapped with its adapter) in place; returns loss curve and timing.
    `stop_after` ends early without finishing (to test resuming)."""
    device = device or torch.device("cpu")
    encoded = [data.encode_example(tokenizer, ex, cfg["max_length"]) for ex in examples]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    scheduler = get_linear_schedule_with_warmup(optimizer, cfg["warmup_steps"], cfg["steps"])
    fingerprint = provenance.config_hash({"cfg": cfg, "seed": seed, "n": len(encoded)})
    start, losses = load_checkpoint(ckpt, model, optimizer, scheduler, fingerprint) if ckpt else (0, [])
    if start == 0:
        seed_everything(seed)
    model.train()
    tokens, t0 = 0, time.perf_counter()
    bar = tqdm(range(start, cfg["steps"]), initial=start, total=cfg["steps"], desc="train", mininterval=2)
    for step in bar:
        batch = data.collate([encoded[i] for i in batch_indices(len(encoded), cfg["batch_size"], seed, step)],
                             tokenizer.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        tokens += int(batch["attention_mask"].sum())
        bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        done = step + 1
        if ckpt and (done % cfg.get("checkpoint_every", 25) == 0 or done == stop_after) and done < cfg["steps"]:
            save_checkpoint(ckpt, model, optimizer, scheduler, done, losses, fingerprint)
        if stop_after is not None and done >= stop_after:
            break
    elapsed = time.perf_counter() - t0
    model.eval()
    return {"losses": losses, "resumed_from_step": start, "train_time_s": elapsed,
            "tokens_per_s": tokens / elapsed if elapsed > 0 else None, "steps": len(losses)}


def run(model_name: str, model_src: str, task: str, task_dir: str | Path, method: str, rank: int,
        seed: int, cfg: dict, out_adapter: str | Path, out_metrics: str | Path, threads: int = 1) -> dict:
    """One grid cell: load, attach the method, train, save the peft adapter and a metrics JSON."""
    torch.set_num_threads(threads)
    device, amp_dtype = models.pick_device()
    seed_everything(seed)
    base, tokenizer = models.load_causal_lm(model_src)
    targets = models.target_modules(base, cfg.get("target_modules"))
    model = methods.attach(method, base, rank, cfg, targets).to(device)
    examples = data.read_jsonl(Path(task_dir) / "train.jsonl")
    ckpt = Path(out_metrics).parent / "checkpoint" / "state.pt"
    log = fit(model, tokenizer, examples, cfg, seed, ckpt=ckpt, device=device, amp_dtype=amp_dtype)
    with atomic.directory(out_adapter) as tmp:
        model.save_pretrained(tmp)
    metrics = {
        "model": model_name, "task": task, "method": method, "rank": rank, "seed": seed,
        "train_config": cfg, "target_modules": targets, "n_train_examples": len(examples),
        "trainable_params": methods.trainable_parameters(model),
        "total_params": sum(p.numel() for p in model.parameters()),
        "device": str(device), "amp_dtype": str(amp_dtype) if amp_dtype else "float32",
        "final_loss": float(np.mean(log["losses"][-5:])), **log, **peak_memory_mb(device),
        "packages": provenance.package_versions(), "git_commit": provenance.git_commit(),
        "hardware": provenance.hardware(),
    }
    atomic.write_json(out_metrics, metrics)
    if ckpt.exists():
        ckpt.unlink()
    return metrics
