# Snakemake script: compare the grid with its published reference (rule compare).
from pathlib import Path

from lora_tsd.aggregate.published import compare

result = compare.compare(snakemake.params.grid, snakemake.input.reference, files=list(snakemake.input.records))
compare.write(result, snakemake.output.md, snakemake.output.json)
lines = compare.summary_lines(result) + [f"written: {snakemake.output.md}"]
Path(snakemake.log[0]).write_text("\n".join(lines) + "\n")
print("\n".join(lines), flush=True)  # to the terminal, not only the log
