# Snakemake script: compare the grid with its published reference (rule compare).
import sys
from pathlib import Path

from lora_tsd.aggregate.published import compare

reference = Path(snakemake.params.reference)
if not reference.is_file():
    sys.stderr.write(f"\nconfig key 'reference': no published reference at {reference} (set `reference` to the "
                     "published leaderboard.json to compare with; default docs/reference/<name>/leaderboard.json)\n\n")
    raise SystemExit(1)
result = compare.compare(snakemake.params.grid, reference, files=list(snakemake.input.records))
compare.write(result, snakemake.output.md, snakemake.output.json)
lines = compare.summary_lines(result) + [f"written: {snakemake.output.md}"]
Path(snakemake.log[0]).write_text("\n".join(lines) + "\n")
print("\n".join(lines), flush=True)  # to the terminal, not only the log
