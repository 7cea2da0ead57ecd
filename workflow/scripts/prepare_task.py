# Snakemake script: normalise one task and carve its train/test split.
import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

from lora_tsd.data import prepare

raw = snakemake.input.raw[0] if snakemake.input.raw else None
task = snakemake.wildcards.task
manifest = prepare.prepare(task, snakemake.params.source, snakemake.params.split, snakemake.output[0], raw=raw,
                           val_rows=snakemake.params.split.get("val_rows", 0), scored=task in snakemake.config["tasks"])
print(manifest)
