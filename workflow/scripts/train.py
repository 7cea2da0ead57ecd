# Snakemake script: train one grid cell.
import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "a", buffering=1)

from lora_tsd import train

w = snakemake.wildcards
train.run(snakemake.params.model_name, snakemake.params.model_source, w.train_set,
          snakemake.input.data, w.method, int(w.rank), int(w.seed), dict(snakemake.params.train),
          snakemake.output.adapter, snakemake.output.metrics, threads=snakemake.threads,
          tsd_cfg=dict(snakemake.params.tsd), svd_cache=snakemake.params.svd_cache,
          out_analysis=snakemake.output.analysis,
          stage_input=snakemake.input.stage[0] if snakemake.input.stage else None)
