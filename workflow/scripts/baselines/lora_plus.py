# Snakemake script: one LoRA+ cell, trained by transformers' Trainer with peft's
# create_loraplus_optimizer, leaving the run-folder contract (lora_tsd/pipeline/contract.py): a peft
# adapter and train.json. Of lora_tsd it uses only the task data encoding (the prompts every
# method trains on), model loading, the atomic writers and provenance; not its training loop.
import math
import os
import resource
import sys
import tempfile
import time

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")  # models and data are local by now

from lora_tsd.pipeline import gpu_slots

gpu, gpu_lock = gpu_slots.claim()  # one GPU per job (no-op on a CPU machine)

from lora_tsd import kernels

kernels.pin(snakemake.config.get("exact", False))  # the exact switch, before torch loads

import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from peft.optimizers import create_loraplus_optimizer
from transformers import Trainer, TrainingArguments

from lora_tsd import atomic, models, provenance
from lora_tsd.data import encoding, prepare
from lora_tsd.data.tasks import TASKS, TRAIN_SETS

w, cfg, options = snakemake.wildcards, dict(snakemake.params.train), dict(snakemake.params.options)
rank, seed = int(w.rank), int(w.seed)
classify = TRAIN_SETS[w.train_set].format == "classification"
torch.set_num_threads(snakemake.threads)
cuda = torch.cuda.is_available()


def load():
    """The base model (a fresh seeded head for classification) and its LoRA adapter."""
    src = snakemake.params.model_source
    if classify:
        base, tokenizer = models.load_classifier(src, TASKS[TRAIN_SETS[w.train_set].tasks[0]].num_labels, seed)
        extra = {"task_type": "SEQ_CLS", "modules_to_save": models.head_modules(base)}
    else:
        base, tokenizer = models.load_causal_lm(src)
        extra = {"task_type": "CAUSAL_LM"}
    torch.manual_seed(seed)
    lora = LoraConfig(r=rank, lora_alpha=cfg["lora_alpha_ratio"] * rank, lora_dropout=cfg["lora_dropout"],
                      target_modules=models.target_modules(base, cfg.get("target_modules")), bias="none", **extra)
    return get_peft_model(base, lora), tokenizer


def rows(tokenizer):
    """Encoded training rows, less the validation hold-out every method leaves out
    (datasets' train_test_split with seed 42, as lora_tsd's own split)."""
    table = Dataset.from_list(prepare.read_jsonl(os.path.join(snakemake.input.data, "train.jsonl")))
    if cfg.get("val_size"):
        table = table.train_test_split(test_size=cfg["val_size"], shuffle=True, seed=42)["train"]
    if classify:
        return [encoding.encode_classification(tokenizer, r, cfg["max_length"]) for r in table]
    return [encoding.encode_example(tokenizer, r, cfg["max_length"], bool(cfg.get("train_on_inputs"))) for r in table]


def collator(tokenizer):
    if classify:
        return lambda batch: encoding.collate_classification(batch, tokenizer.pad_token_id)
    return lambda batch: encoding.collate_causal(batch, tokenizer.pad_token_id, side="left")


def arguments(out_dir: str) -> TrainingArguments:
    """The cell's train options in the Trainer's terms."""
    micro = cfg.get("micro_batch_size") or cfg["batch_size"]
    return TrainingArguments(
        output_dir=out_dir, per_device_train_batch_size=micro,
        gradient_accumulation_steps=max(1, cfg["batch_size"] // micro),
        max_steps=cfg.get("steps") or -1, num_train_epochs=cfg.get("epochs") or 1,
        learning_rate=cfg["lr"], weight_decay=cfg["weight_decay"], lr_scheduler_type="linear",
        # transformers 5 reads a float below 1 as a share of the run (warmup_ratio is gone)
        warmup_steps=cfg["warmup_steps"] if cfg.get("warmup_ratio") is None else float(cfg["warmup_ratio"]),
        max_grad_norm=cfg.get("max_grad_norm") or 0.0,
        logging_steps=1, save_strategy="no", report_to="none", seed=seed, data_seed=seed,
        use_cpu=not cuda, bf16=cuda and torch.cuda.is_bf16_supported(), remove_unused_columns=False,
        dataloader_num_workers=0, disable_tqdm=True)


model, tokenizer = load()
optimizer = create_loraplus_optimizer(model=model, optimizer_cls=torch.optim.AdamW, lr=cfg["lr"],
                                      loraplus_lr_ratio=options["loraplus_lr_ratio"],
                                      weight_decay=cfg["weight_decay"])
train_rows = rows(tokenizer)
with tempfile.TemporaryDirectory() as scratch:
    trainer = Trainer(model=model, args=arguments(scratch), train_dataset=train_rows,
                      data_collator=collator(tokenizer), optimizers=(optimizer, None))
    t0 = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - t0

losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
bad = next((i for i, x in enumerate(losses) if not math.isfinite(x)), None)
peak = ({"peak_gpu_mem_mb": torch.cuda.max_memory_allocated() / 2**20} if cuda
        else {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
with atomic.directory(snakemake.output.adapter) as tmp:
    model.save_pretrained(tmp)
atomic.write_json(snakemake.output.metrics, {
    "model": snakemake.params.model_name, "train_set": w.train_set, "method": "lora_plus", "rank": rank,
    "seed": seed, "train_config": cfg, "method_options": options,
    "trainer": "transformers.Trainer + peft.optimizers.create_loraplus_optimizer",
    "n_train_examples": len(train_rows),
    "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    "total_params": sum(p.numel() for p in model.parameters()),
    "steps": trainer.state.global_step, "losses": losses,
    "final_loss": sum(losses[-5:]) / len(losses[-5:]) if losses else None,
    "train_time_s": elapsed, "tokens_per_s": None, **peak,
    "diverged": None if bad is None else {"step": bad + 1, "loss": losses[bad]}, "loss_flag": None,
    "device": "cuda" if cuda else "cpu", "packages": provenance.package_versions(),
    "git_commit": provenance.git_commit(), "hardware": provenance.hardware(),
})
