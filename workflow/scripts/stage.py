# Snakemake script: a method's stage (rules in stages.smk), run by the function the rule names.
import os
import sys
from importlib import import_module

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

# rule -> (lora_tsd.methods module, function)
STAGES = {"eva_init": ("eva", "eva_init"), "gradient_init": ("lora_ga", "gradient_init"),
          "corda_init": ("corda", "corda_init"), "svd_cache": ("svds", "svd_cache")}

from lora_tsd import faults

w = snakemake.wildcards
module, function = STAGES[snakemake.rule]
if snakemake.rule == "svd_cache":  # per model and dtypes: no train set, data or train options
    what = f"in svd_cache for {w.model} ({w.base_dtype} weights, {w.svd_dtype} SVDs)"
    levers = [f"tsd.svd_dtype float32 (now {w.svd_dtype})", "a larger GPU for this rule (the profile's gpu_model / mem_mb)"]
    args = dict(kind=snakemake.params.kind, base_dtype=w.base_dtype, svd_dtype=w.svd_dtype,
                targets=snakemake.params.target_modules, cache_dir=snakemake.params.cache_dir)
else:
    cfg = dict(snakemake.params.train)
    what, levers = f"in {snakemake.rule} for {w.model}/{w.train_set}", faults.train_levers(cfg)
    args = dict(train_set=w.train_set, data_dir=snakemake.input.data, cfg=cfg,
                **{key: int(w[key]) for key in ("rank", "seed") if key in w.keys()})
with faults.out_of_memory(what, levers):
    getattr(import_module(f"lora_tsd.methods.{module}"), function)(
        model_src=snakemake.params.model_source, out=snakemake.output[0], threads=snakemake.threads, **args)
