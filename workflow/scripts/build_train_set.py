# Snakemake script: write the rows one train set's cells learn from.
import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

from lora_tsd.data import prepare

task_dirs = {name: path for name, path in snakemake.input.items() if name != "train_data"}
manifest = prepare.build_train_set(snakemake.wildcards.train_set, snakemake.params.source, snakemake.output[0],
                                   task_dirs, snakemake.params.train_data)
print(manifest)
