# Snakemake script: train one grid cell.
import os
import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "a", buffering=1)

# Hub models were fetched by the download rule: jobs read HF_HOME only (compute nodes may have no network).
# Set before anything imports huggingface_hub, which reads it once.
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")

from lora_tsd.pipeline import gpu_slots

# One GPU per process: claim free devices before torch starts (no-op on a CPU machine).
processes = int(snakemake.params.train.get("gpus", 1))
gpu, gpu_lock = gpu_slots.claim(count=processes)

from lora_tsd import kernels

# The exact switch pins the kernel paths: before torch loads, which reads the pins once.
kernels.pin(snakemake.config.get("exact", False))

from lora_tsd.data.tasks import TRAIN_SETS
from lora_tsd.pipeline.config import RESULT_NEUTRAL, cell_train
from lora_tsd.pipeline import shapes
from lora_tsd.training import cell, launch

# A hub model's matrix sizes are known once it is downloaded: the start-up check of ranks and
# tsd.dash_s against them (lora_tsd/pipeline/shapes.py) runs again here, before training starts.
problems = shapes.problems(snakemake.config, only=[snakemake.params.model_name])
if problems:
    raise SystemExit("invalid config:\n  " + "\n  ".join(problems))

w = snakemake.wildcards
# Result-neutral knobs (checkpoint_every) are read here, not passed as params: changing them reruns nothing.
options_of_cell = cell_train(snakemake.config, TRAIN_SETS[w.train_set].family, w.train_set, w.method)
options = {**snakemake.params.train, **{k: options_of_cell[k] for k in RESULT_NEUTRAL if k in options_of_cell}}
# Where SVDs are kept is not a result either (tsd.svd_cache: on or off).
svd_cache = f"resources/svd/{w.model}" if snakemake.config["tsd"]["svd_cache"] else None
args = dict(model_name=snakemake.params.model_name, model_src=snakemake.params.model_source,
            train_set=w.train_set, data_dir=snakemake.input.data, method=w.method, rank=int(w.rank),
            seed=int(w.seed), cfg=options, out_adapter=snakemake.output.adapter,
            out_metrics=snakemake.output.metrics, threads=snakemake.threads, tsd_cfg=dict(snakemake.params.tsd),
            svd_cache=svd_cache, out_analysis=snakemake.output.analysis,
            stage_input=snakemake.input.stage[0] if snakemake.input.stage else None)
if processes > 1:  # data-parallel: torchrun, one process per claimed GPU
    spec = os.path.join(os.path.dirname(snakemake.output.metrics), "launch.json")
    launch.launch(processes, args, spec, out=sys.stdout)
    os.remove(spec)
else:
    cell.run(**args)
