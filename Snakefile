# lora-tsd-bench: methods x ranks x models x tasks x seeds -> train -> evaluate -> leaderboard.
# Config: config.yaml (the embedded default grid); override with --configfile.
import os

from snakemake.utils import min_version

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/assets.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/stages.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/aggregate.smk"


rule all:
    input:
        "results/leaderboard.md",
        "results/leaderboard.csv",
    default_target: True
