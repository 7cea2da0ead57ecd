# Snakemake script: write the leaderboard tables.
import json
import sys
from pathlib import Path

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

from lora_tsd import provenance
from lora_tsd.aggregate import tables


def manifests(folders):
    return [json.loads((Path(d) / "split.json").read_text()) for d in folders]


config = dict(snakemake.params.config)
tests = "; ".join(f"{s['task']}: {s['how']}, {s['n_train']} train / {s['n_test']} test"
                  for s in manifests(snakemake.input.data))
trains = "; ".join(f"{s['train_set']}: {s['how']} ({s['n_train']} rows)" for s in manifests(snakemake.input.train_sets))
stamp = {"commit": provenance.git_commit(), "config_hash": provenance.config_hash(config),
         "data": f"test sets: {tests}. Train sets: {trains}.",
         **({"setting": snakemake.params.setting} if snakemake.params.setting else {})}
tables.write(list(snakemake.input.cells) + list(snakemake.input.base), config, stamp,
             snakemake.output.md, snakemake.output.csv, snakemake.output.json, snakemake.output.paired,
             out_pages={"reproduction": snakemake.output.reproduction, None: snakemake.output.page},
             out_blocks=dict(zip(snakemake.params.families, snakemake.output.page_blocks)),
             forgetting_files=list(snakemake.input.forgetting) if snakemake.params.forgetting else None)
