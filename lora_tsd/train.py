"""The training loop: plain PyTorch, AdamW with linear warm-up/decay, loss on answer tokens.
Resumable: a checkpoint every `checkpoint_every` steps holds the trainable weights, optimizer,
scheduler and RNG states, and batch order is a pure function of (seed, step)."""
from __future__ import annotations

import contextlib
import random
import resource
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from . import atomic, data, export, methods, models, provenance, tsd
from .dash import lora_layers
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


def adapter_state(model) -> dict:
    """Trainable tensors plus the methods' adapter buffers (e.g. LoRA-Dash's selected directions)."""
    state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    state.update({n: b.detach().clone() for n, b in model.named_buffers() if ".lora_" in n})
    return state


def save_checkpoint(path: Path, model, optimizer, scheduler, step: int, losses: list, fingerprint: str,
                    ctx=None):
    with atomic.file(path) as tmp:
        torch.save({"fingerprint": fingerprint, "step": step, "losses": losses,
                    "adapter": adapter_state(model), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": _rng_state(),
                    "analysis": ctx.analysis if ctx else {}, "timings": ctx.timings if ctx else {}}, tmp)


def load_checkpoint(path: Path, model, optimizer, scheduler, fingerprint: str, ctx=None):
    """Returns (step, losses) from a matching checkpoint, or (0, []) when there is none."""
    if not path.exists():
        return 0, []
    ckpt = torch.load(path, weights_only=False)
    if ckpt["fingerprint"] != fingerprint:
        print(f"[train] ignoring checkpoint {path}: it belongs to a different run config")
        return 0, []
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    with torch.no_grad():
        for name, value in ckpt["adapter"].items():
            tensors[name].copy_(value)
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    _set_rng_state(ckpt["rng"])
    if ctx is not None:
        ctx.analysis.update(ckpt["analysis"])
        ctx.timings.update(ckpt["timings"])
    print(f"[train] resumed from {path} at step {ckpt['step']}")
    return ckpt["step"], ckpt["losses"]


def peak_memory_mb(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"peak_gpu_mem_mb": torch.cuda.max_memory_allocated() / 2**20}
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def encode(tokenizer, rows: list[dict], cfg: dict, fmt: str) -> list[dict]:
    if fmt == "classification":
        return [data.encode_classification(tokenizer, r, cfg["max_length"]) for r in rows]
    return [data.encode_example(tokenizer, r, cfg["max_length"]) for r in rows]


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


def fit(model, tokenizer, examples: list[dict], cfg: dict, seed: int, ckpt: Path | None = None,
        stop_after: int | None = None, device: torch.device | None = None, amp_dtype=None,
        hooks: methods.Hooks | None = None, ctx: methods.Context | None = None, fmt: str = "causal") -> dict:
    """Train `model` (already wrapped with its adapter, hooks set up) in place; returns the loss
    curve and timing. `hooks.after_step` runs after every optimizer step (and once before the
    first, for switches at step 0). `stop_after` ends early without finishing (to test resuming)."""
    device = device or torch.device("cpu")
    hooks = hooks or methods.Hooks()
    encoded = encode(tokenizer, examples, cfg, fmt)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    scheduler = get_linear_schedule_with_warmup(optimizer, cfg["warmup_steps"], cfg["steps"])
    fingerprint = provenance.config_hash({"cfg": cfg, "seed": seed, "n": len(encoded),
                                          "tsd": ctx.tsd if ctx else None})
    start, losses = load_checkpoint(ckpt, model, optimizer, scheduler, fingerprint, ctx) if ckpt else (0, [])
    if start == 0:
        seed_everything(seed)
    hooks.after_step(model, start, ctx)
    model.train()
    tokens, t0 = 0, time.perf_counter()
    bar = tqdm(range(start, cfg["steps"]), initial=start, total=cfg["steps"], desc="train", mininterval=2)
    for step in bar:
        batch = make_batch(encoded, cfg, seed, step, tokenizer.pad_token_id, device, fmt)
        autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
        with autocast:
            loss = batch_loss(model, batch, fmt)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        tokens += int(batch["attention_mask"].sum())
        bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        done = step + 1
        hooks.after_step(model, done, ctx)
        if ckpt and (done % cfg.get("checkpoint_every", 25) == 0 or done == stop_after) and done < cfg["steps"]:
            save_checkpoint(ckpt, model, optimizer, scheduler, done, losses, fingerprint, ctx)
        if stop_after is not None and done >= stop_after:
            break
    elapsed = time.perf_counter() - t0
    model.eval()
    return {"losses": losses, "resumed_from_step": start, "train_time_s": elapsed,
            "tokens_per_s": tokens / elapsed if elapsed > 0 else None, "steps": len(losses)}


def make_context(tokenizer, examples, cfg: dict, tsd_cfg: dict, seed: int, device, amp_dtype,
                 svd_cache: str | Path | None, stage_input: str | None = None,
                 fmt: str = "causal") -> methods.Context:
    """Hooks' view of the run: a plain-LoRA warm-up and extra batches use their own seed offset."""

    def warmup(m, n):
        sub = {**cfg, "steps": n, "warmup_steps": min(cfg["warmup_steps"], max(n - 1, 0))}
        return fit(m, tokenizer, examples, sub, seed + 7919, device=device, amp_dtype=amp_dtype, fmt=fmt)

    def batches(n):
        encoded = encode(tokenizer, examples, cfg, fmt)
        return [make_batch(encoded, cfg, seed + 7919, k, tokenizer.pad_token_id, device, fmt) for k in range(n)]

    return methods.Context(train=cfg, tsd=tsd_cfg, total_steps=cfg["steps"], cache=tsd.SVDCache(svd_cache),
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
    return out


def load_base(model_src: str, train_set: str, seed: int):
    """The model a train set needs (a causal LM, or an encoder with a seeded fresh head) and
    the peft options that go with it (classifier heads train beside the adapter)."""
    ts = TRAIN_SETS[train_set]
    if ts.format == "classification":
        base, tokenizer = models.load_classifier(model_src, TASKS[ts.tasks[0]].num_labels, seed)
        return base, tokenizer, {"task_type": "SEQ_CLS", "modules_to_save": models.head_modules(base)}
    base, tokenizer = models.load_causal_lm(model_src)
    return base, tokenizer, {}


def run(model_name: str, model_src: str, train_set: str, data_dir: str | Path, method: str, rank: int,
        seed: int, cfg: dict, out_adapter: str | Path, out_metrics: str | Path, threads: int = 1,
        tsd_cfg: dict | None = None, svd_cache: str | Path | None = None,
        out_analysis: str | Path | None = None, stage_input: str | None = None) -> dict:
    """One grid cell: load, attach the method, train, export a standard peft adapter, write metrics."""
    torch.set_num_threads(threads)
    device, amp_dtype = models.pick_device()
    seed_everything(seed)
    spec, fmt = methods.METHODS[method], TRAIN_SETS[train_set].format
    base, tokenizer, peft_extra = load_base(model_src, train_set, seed)
    targets = models.target_modules(base, cfg.get("target_modules"))
    model = methods.attach(method, base, rank, cfg, targets, **peft_extra).to(device)
    examples = data.read_jsonl(Path(data_dir) / "train.jsonl")
    ctx = make_context(tokenizer, examples, cfg, tsd_cfg or {}, seed, device, amp_dtype, svd_cache,
                       stage_input, fmt)
    spec.hooks.setup(model, ctx)
    ckpt = Path(out_metrics).parent / "checkpoint" / "state.pt"
    log = fit(model, tokenizer, examples, cfg, seed, ckpt=ckpt, device=device, amp_dtype=amp_dtype,
              hooks=spec.hooks, ctx=ctx, fmt=fmt)
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
        "n_train_examples": len(examples), "trainable_params": methods.trainable_parameters(model),
        "total_params": sum(p.numel() for p in model.parameters()),
        "device": str(device), "amp_dtype": str(amp_dtype) if amp_dtype else "float32",
        "final_loss": float(np.mean(log["losses"][-5:])), **log, **exported, **ctx.timings,
        **peak_memory_mb(device), "svd_cache": ctx.cache.report(),
        "packages": provenance.package_versions(), "git_commit": provenance.git_commit(),
        "hardware": provenance.hardware(),
    }
    atomic.write_json(out_metrics, metrics)
    if ckpt.exists():
        ckpt.unlink()
        ckpt.parent.rmdir()  # the run is finished: leave no empty checkpoint folder behind
    return metrics
