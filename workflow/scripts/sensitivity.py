# Snakemake script: one task family's sensitivity figure from the tuned sweep's sensitivity.csv.
import sys

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

import pandas as pd

from lora_tsd import atomic
from lora_tsd.aggregate.figures.sensitivity import sensitivity_figure
from lora_tsd.aggregate.figures.style import DPI

family = snakemake.wildcards.family
try:
    rows = pd.read_csv(snakemake.input[0])
except pd.errors.EmptyDataError:  # no candidate has a score: tuned.py writes an empty CSV
    rows = pd.DataFrame(columns=["family", "mean", "split"])
fig = sensitivity_figure(rows[rows["family"] == family], family)
with atomic.file(snakemake.output[0]) as tmp:
    fig.savefig(tmp, dpi=DPI, bbox_inches="tight")  # nothing clipped at the edges
print(f"{family}: {(rows['family'] == family).sum()} rows drawn to {snakemake.output[0]}")
