# Snakemake script: EVA's data-driven initialisation state for one model x train set x rank.
import os
import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

# Hub models were fetched by the download rule: jobs read HF_HOME only (compute nodes may have no network).
# Set before anything imports huggingface_hub, which reads it once.
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")

from lora_tsd.pipeline import gpu_slots

# One GPU per job: claim a free device before torch starts (no-op on a CPU machine).
gpu, gpu_lock = gpu_slots.claim()

from lora_tsd.methods import eva

w = snakemake.wildcards
eva.eva_init(snakemake.params.model_source, w.train_set, snakemake.input.data, int(w.rank),
             dict(snakemake.params.train), snakemake.output[0], threads=snakemake.threads)
