# Snakemake script: write the leaderboard tables.
import json
import sys
from pathlib import Path

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

from lora_tsd import aggregate, provenance

config = dict(snakemake.params.config)
splits = [json.loads((Path(d) / "split.json").read_text()) for d in snakemake.input.data]
data = "; ".join(f"{s['task']}: {s['how']}, {s['n_train']} train / {s['n_test']} test" for s in splits)
stamp = {"commit": provenance.git_commit(), "config_hash": provenance.config_hash(config), "data": data}
aggregate.write(list(snakemake.input.cells) + list(snakemake.input.base), config, stamp,
                snakemake.output.md, snakemake.output.csv, snakemake.output.json)
