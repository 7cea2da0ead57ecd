# Snakemake script: one task family's figures from the leaderboard and the cells' records, and its
# report page (the tables aggregate wrote as blocks, with the figures embedded).
import json
import sys
from pathlib import Path

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

import pandas as pd

from lora_tsd import atomic
from lora_tsd.aggregate import page
from lora_tsd.aggregate.figures import draw
from lora_tsd.data.tasks import TRAIN_SETS

family = snakemake.wildcards.family
summary = pd.DataFrame(json.loads(Path(snakemake.input.summary).read_text())["summary"])
records = []
for path in snakemake.input.train:
    rec = json.loads(Path(path).read_text())
    if TRAIN_SETS[rec["train_set"]].family == family:
        records.append({**rec, "run_dir": str(Path(path).parent)})
written = draw.draw_all(summary[summary.family == family], records, Path(snakemake.output.pareto).parent)
assert {Path(p).name for p in written.values()} == {Path(snakemake.output[n]).name for n in draw.FILES}, written

# The family's report page: its tables with these figures embedded.
blocks, title = page.load(snakemake.input.page)
atomic.write_text(snakemake.output.page, page.render(blocks, family, title,
                                                     {name: Path(p).read_bytes() for name, p in written.items()},
                                                     dict(snakemake.params.captions)))
