# Comparison tables over every finished grid cell, their report pages, and the figures.
from lora_tsd.aggregate.figures.draw import FILES as FIGURES

# The task families of this grid: one report category (tables and figures) each.
GRID_FAMILIES = list(dict.fromkeys(TASKS[task].family for task in config["tasks"]))
PLOTS = list(FIGURES)


def grid_train_records(shared_only=True):
    """train.json of every trained cell of the grid (built-in and external methods); in a
    sweep, of the shared setting's cells unless shared_only is False."""
    return sorted({os.path.join(os.path.dirname(os.path.dirname(cell)), "train.json")
                   for cell in grid_cells(shared_only=shared_only)})


rule aggregate:
    input:
        cells=grid_cells(shared_only=True),
        base=base_cells(),
        data=[data_dir(task) for task in config["tasks"]],
        train_sets=[train_set_dir(ts) for ts in train_sets_for(config["tasks"])],
        forgetting=forgetting_records(),
    output:
        md=f"{GRID}/leaderboard.md",
        page=report(f"{GRID}/report/leaderboard.html", caption="../report/leaderboard.rst", category="Leaderboard"),
        csv=f"{GRID}/leaderboard.csv",
        json=f"{GRID}/leaderboard.json",
        paired=f"{GRID}/paired.csv",
        # Each family's page as blocks: rule plots renders it with the family's figures.
        page_blocks=[f"{GRID}/pages/{family}.json" for family in GRID_FAMILIES],
        reproduction=report(f"{GRID}/report/reproduction.html", caption="../report/reproduction.rst",
                            category="Reproduction"),
    params:
        config=result_config(config),
        code=code_hash("lora_tsd.aggregate.tables"),
        families=GRID_FAMILIES,
        forgetting=FORGETTING["enabled"],
        setting=("each method at its shared setting (the train sections' values, no sweep candidate): "
                 + "; ".join(f"{m} on {ts}: {shared_setting(ts, m)}" for ts in train_sets_for(config["tasks"])
                             for m in config["methods"])) if SWEEP else "",
    log:
        f"{GRID}/aggregate.log",
    script:
        "../scripts/aggregate.py"


def figure_captions():
    """Each figure's report caption (workflow/report/plots/<name>.rst), shown under it on the page too."""
    out = {}
    for name in PLOTS:
        with open(os.path.join(workflow.basedir, "workflow", "report", "plots", f"{name}.rst")) as f:
            out[name] = f.read()
    return out


# A family's figures, then its report page: the tables (from aggregate) with each figure
# embedded below the tables it illustrates.
rule plots:
    input:
        summary=f"{GRID}/leaderboard.json",
        train=grid_train_records(),
        page=f"{GRID}/pages/{{family}}.json",
    output:
        **{name: report(f"{GRID}/plots/{{family}}/{name}.png", caption=f"../report/plots/{name}.rst",
                        category="{family}", subcategory="Figures", labels={"figure": name.replace("_", " ")})
           for name in PLOTS},
        page=report(f"{GRID}/report/{{family}}.html", caption="../report/family_page.rst", category="{family}",
                    subcategory="Tables", labels={"page": "tables, comparisons, costs, cells, figures"}),
    params:
        code=code_hash("lora_tsd.aggregate.figures.draw"),
        page_code=code_hash("lora_tsd.aggregate.page"),
        captions=figure_captions(),
    wildcard_constraints:
        family="|".join(GRID_FAMILIES),
    log:
        f"{GRID}/plots/{{family}}.log",
    script:
        "../scripts/plots.py"


def reference_file():
    """The published reference (config `reference`, {name} the grid's name), from the workflow's folder."""
    path = (config.get("reference") or "docs/reference/{name}/leaderboard.json").format(name=config["name"])
    return os.path.join(workflow.basedir, path)  # an absolute path stays itself


def reference_input(wildcards):
    """The reference as the rule's input: a missing one stops the run before any job, naming the key."""
    path = reference_file()
    if not os.path.isfile(path):
        raise ValueError(f"config key 'reference': no published reference at {path} (set `reference` to the "
                         "published leaderboard.json to compare with; default docs/reference/<name>/leaderboard.json)")
    return path


localrules:
    compare,


# A finished grid against its published reference (not part of `all`: snakemake --cores all
# compare). The comparison is written even when cells fall outside; the verdict goes to the terminal.
rule compare:
    input:
        board=f"{GRID}/leaderboard.json",
        records=grid_cells(shared_only=True) + base_cells(),
        reference=reference_input,
    output:
        md=f"{GRID}/comparison.md",
        json=f"{GRID}/comparison.json",
    params:
        grid=GRID,
        code=code_hash("lora_tsd.aggregate.published.compare"),
    log:
        f"{GRID}/comparison.log",
    script:
        "../scripts/compare.py"
