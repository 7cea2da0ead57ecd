# Snakemake script: the tuned leaderboard (each method at its selected setting), its paired
# comparisons with LoRA at LoRA's own selection, and the sensitivity table of every candidate.
import json
import sys
from pathlib import Path

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

from lora_tsd import atomic, provenance
from lora_tsd.aggregate import selection, tables

record = json.loads(Path(snakemake.input.selection).read_text())
chosen = {(s["model"], s["family"], s["method"], str(s["rank"])): s["setting"] for s in record["selections"]}
cells = [(f, json.loads(Path(f).read_text())) for f in snakemake.input.cells]
picked = [f for f, r in cells if chosen.get((r["model"], r["family"], r["method"], str(r["rank"]))) == r["setting"]]

config = dict(snakemake.params.config)
manifests = [json.loads((Path(d) / "split.json").read_text()) for d in snakemake.input.data]
trains = [json.loads((Path(d) / "split.json").read_text()) for d in snakemake.input.train_sets]
stamp = {"commit": provenance.git_commit(), "config_hash": provenance.config_hash(config),
         "title": "Tuned leaderboard",
         "setting": f"each method at the candidate selected on validation rows (select_by: {record['select_by']}; "
                    f"{record['rule']}); the 'selected setting' column names it, selection.json has every candidate",
         "data": "test sets: " + "; ".join(f"{s['task']}: {s['how']}, {s['n_train']} train / {s.get('n_val', 0)} "
                                           f"validation / {s['n_test']} test" for s in manifests)
                 + ". Train sets: " + "; ".join(f"{s['train_set']}: {s['how']} ({s['n_train']} rows)" for s in trains)
                 + "."}
tables.write(picked + list(snakemake.input.base), config, stamp, snakemake.output.md, snakemake.output.csv,
             snakemake.output.json, snakemake.output.paired, out_pages={None: snakemake.output.page}, selected=chosen,
             forgetting_files=list(snakemake.input.forgetting) if snakemake.params.forgetting else None)

# Every candidate's test score (with its CI), beside its validation score, for the sensitivity figure.
test_summary = selection.summary_by_setting([f for f, _ in cells])
rows = selection.sensitivity_rows(record, test_summary, (config.get("selection") or {}).get("metric"))
atomic.write_text(snakemake.output.sensitivity, rows.to_csv(index=False))
