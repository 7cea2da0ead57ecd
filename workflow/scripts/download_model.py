# Snakemake script: a hub model fetched into HF_HOME once, on the machine that runs snakemake.
import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

from lora_tsd.pipeline import hub

print(hub.download_model(snakemake.params.name, snakemake.params.kind, snakemake.output[0]))
