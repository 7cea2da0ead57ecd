# Snakemake script: score a trained cell (or the base model) on one task's held-out rows.
import os
import sys
from pathlib import Path

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

# Hub models were fetched by the download rule: jobs read HF_HOME only (compute nodes may have no network).
# Set before anything imports huggingface_hub, which reads it once.
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")

from lora_tsd.pipeline import gpu_slots

# One GPU per job: claim a free device before torch starts (no-op on a CPU machine).
gpu, gpu_lock = gpu_slots.claim()

from lora_tsd import kernels

# The exact switch pins the kernel paths: before torch loads, which reads the pins once.
kernels.pin(snakemake.config.get("exact", False))

from lora_tsd.data.tasks import TRAIN_SETS
from lora_tsd.evaluation import scoring
from lora_tsd.pipeline import contract, sweep


def sweep_setting(w) -> dict:
    """A sweep cell's candidate for its record: the folder label and the swept keys' values."""
    label = dict(w.items()).get("setting")
    if label is None:
        return {}
    values = sweep.settings(snakemake.config, TRAIN_SETS[w.train_set].family, w.train_set, w.method)[label]
    return {"setting": label, "setting_values": values}


w = snakemake.wildcards
eval_cfg = dict(snakemake.params.eval)
split = getattr(snakemake.params, "split", "test")  # "val": a sweep's validation rows
run_info = {"method": "base"}
adapter = snakemake.input.get("adapter")
if adapter:
    train = contract.check_cell(adapter, snakemake.params.model_name, w, snakemake.params.producer)
    run_info = {"method": w.method, "rank": int(w.rank), "seed": int(w.seed), "adapter": adapter,
                **sweep_setting(w),
                "adapter_bytes": sum(f.stat().st_size for f in Path(adapter).rglob("*") if f.is_file()),
                "train": {k: v for k, v in train.items() if k not in ("losses", "packages")}}
scoring.run(snakemake.params.model_name, snakemake.params.model_source, w.task,
            Path(snakemake.input.data) / f"{split}.jsonl", adapter, eval_cfg,
            snakemake.output[0], run_info, source=snakemake.params.source, threads=snakemake.threads, split=split)
