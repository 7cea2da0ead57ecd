# Snakemake script: score the base model (forgetting_base) or a trained causal-LM cell
# (forgetting) on the general-text sample; a cell's record holds its forgetting.
import os
import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

# Hub models were fetched by the download rule: jobs read HF_HOME only (compute nodes may have no network).
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")

from lora_tsd.pipeline import gpu_slots

# One GPU per job: claim a free device before torch starts (no-op on a CPU machine).
gpu, gpu_lock = gpu_slots.claim()

from lora_tsd import kernels

# The exact switch pins the kernel paths: before torch loads, which reads the pins once.
kernels.pin(snakemake.config.get("exact", False))

from lora_tsd.data.tasks import TRAIN_SETS
from lora_tsd.evaluation import forgetting
from lora_tsd.pipeline import contract

w = snakemake.wildcards
options = dict(snakemake.params.forgetting)  # each row is scored alone: no batch size
run_info = {"method": "base"}
adapter = snakemake.input.get("adapter")
if adapter:
    train = contract.check_cell(adapter, snakemake.params.model_name, w, snakemake.params.producer)
    run_info = {"method": w.method, "rank": int(w.rank), "seed": int(w.seed), "train_set": w.train_set,
                "family": TRAIN_SETS[w.train_set].family, "adapter": adapter,
                **({"setting": w.setting} if "setting" in dict(w.items()) else {}),
                "train": {"diverged": train.get("diverged")}}
forgetting.run(snakemake.params.model_name, snakemake.params.model_source, snakemake.input.sample, adapter,
               options, snakemake.output[0], run_info, base=snakemake.input.get("base"), threads=snakemake.threads)
