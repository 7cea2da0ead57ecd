# Snakemake script: each method's sweep candidate, chosen on validation rows (or validation loss) only.
import json
import sys
from pathlib import Path

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)

from lora_tsd.aggregate import selection
from lora_tsd.data.tasks import TASKS, TRAIN_SETS
from lora_tsd.pipeline import sweep

config = snakemake.config
select_by = snakemake.params.selection.get("select_by", "score")
grid_sets = list(dict.fromkeys(TASKS[t].train_set for t in config["tasks"]))
order, shared = {}, {}
for train_set in grid_sets:  # candidate order and the shared setting per (family, method)
    family = TRAIN_SETS[train_set].family
    for method in config["methods"]:
        labels = order.setdefault((family, method), [])
        labels += [s for s in sweep.settings(config, family, train_set, method) if s not in labels]
        shared.setdefault((family, method), sweep.shared_label(config, family, train_set, method))
files = [str(f) for f in snakemake.input]
units = {}  # family -> what a candidate needs of every seed: its tasks (scores) or train sets (losses)
for task in config["tasks"]:
    unit, family_units = task if select_by == "score" else TASKS[task].train_set, units.setdefault(TASKS[task].family, [])
    if unit not in family_units:
        family_units.append(unit)
if select_by == "score":
    scores = selection.score_rows(files, snakemake.params.selection.get("metric"))
    summary = selection.summary_by_setting(files)
else:  # a train record's setting is its folder: runs/<model>/<train_set>/<method>/r<rank>/<setting>/s<seed>
    origin = {}
    for f in files:
        rec = json.loads(Path(f).read_text())
        family, label = TRAIN_SETS[rec["train_set"]].family, Path(f).parent.parent.name
        origin[f] = (family, label, sweep.settings(config, family, rec["train_set"], rec["method"])[label])
    scores, summary = selection.loss_rows(files, origin), None
record = selection.write(scores, {"seeds": config["seeds"], "tasks": units, "order": order, "shared": shared},
                         snakemake.output.json, snakemake.output.csv, select_by, summary)
print(json.dumps(record["selections"], indent=1))
