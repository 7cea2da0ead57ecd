# A sweep's selection and tuned tables (only in a grid with a sweep section). `select` reads
# validation records only (the cells' val/<task>.json, or their train.json hold-out losses):
# no test score is among its inputs. `tuned` then reads the test records of the selections.


def sweep_targets():
    """What `all` asks for in a sweep grid."""
    if not SWEEP:
        return []
    return [f"{GRID}/selection.json", f"{GRID}/tuned/leaderboard.md",
            *expand(f"{GRID}/plots/{{family}}/sensitivity.png", family=GRID_FAMILIES)]


def selection_inputs(wildcards):
    return grid_cells("val") if SELECT_BY == "score" else grid_train_records(shared_only=False)


rule select:
    input:
        selection_inputs,
    output:
        json=f"{GRID}/selection.json",
        csv=f"{GRID}/selection.csv",
    params:
        selection=config["selection"],
        code=code_hash("lora_tsd.aggregate.selection"),
    log:
        f"{GRID}/selection.log",
    script:
        "../scripts/select.py"


rule tuned:
    input:
        selection=f"{GRID}/selection.json",
        cells=grid_cells(),
        base=base_cells(),
        data=[data_dir(task) for task in config["tasks"]],
        train_sets=[train_set_dir(ts) for ts in train_sets_for(config["tasks"])],
        forgetting=forgetting_records(shared_only=False),
    output:
        md=f"{GRID}/tuned/leaderboard.md",
        page=report(f"{GRID}/report/tuned.html", caption="../report/tuned.rst", category="Tuned"),
        csv=f"{GRID}/tuned/leaderboard.csv",
        json=f"{GRID}/tuned/leaderboard.json",
        paired=f"{GRID}/tuned/paired.csv",
        sensitivity=f"{GRID}/tuned/sensitivity.csv",
    params:
        config=result_config(config),
        code=code_hash("lora_tsd.aggregate.selection"),
        forgetting=FORGETTING["enabled"],
    log:
        f"{GRID}/tuned/tuned.log",
    script:
        "../scripts/tuned.py"


rule sensitivity:
    input:
        f"{GRID}/tuned/sensitivity.csv",
    output:
        report(f"{GRID}/plots/{{family}}/sensitivity.png", caption="../report/plots/sensitivity.rst",
               category="{family}", subcategory="Figures", labels={"figure": "sensitivity"}),
    params:
        code=code_hash("lora_tsd.aggregate.figures.sensitivity"),
    wildcard_constraints:
        family="|".join(GRID_FAMILIES),
    log:
        f"{GRID}/plots/{{family}}-sensitivity.log",
    script:
        "../scripts/sensitivity.py"
