# Snakemake script: EVA's data-driven initialisation state for one model x train set x rank.
import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

from lora_tsd import stages

w = snakemake.wildcards
stages.eva_init(snakemake.params.model_source, w.train_set, snakemake.input.data, int(w.rank),
                dict(snakemake.params.train), snakemake.output[0], threads=snakemake.threads)
