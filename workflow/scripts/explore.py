# Snakemake script: the exploration's tables, figures and report page.
import json
import sys
from pathlib import Path

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

import pandas as pd

from lora_tsd.aggregate.explore import page

summary = pd.DataFrame(json.loads(Path(snakemake.input.summary).read_text())["summary"])
records = [{**json.loads(Path(p).read_text()), "run_dir": str(Path(p).parent)} for p in snakemake.input.train]
written = page.build(records, summary, list(snakemake.params.ranks), Path(snakemake.output.tables[0]).parent,
                     snakemake.output.page, f"Task-specific directions: {snakemake.config['name']}",
                     swept=list(snakemake.params.swept))
assert {str(p) for p in written.values()} == {str(Path(p)) for p in snakemake.output}, written
