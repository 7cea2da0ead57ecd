# Snakemake script: the general-text sample the forgetting score reads (built once).
import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

from lora_tsd.data import general_text

wheel = snakemake.input.wheel
print(general_text.write_sample(snakemake.params.text, snakemake.params.rows, snakemake.output[0],
                                wheel[0] if wheel else None))
