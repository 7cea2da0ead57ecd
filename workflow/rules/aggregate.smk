# Comparison tables over every finished grid cell, their report pages, and the figures.
from lora_tsd.aggregate.figures.draw import FILES as FIGURES

# The task families of this grid: one report category (tables and figures) each.
GRID_FAMILIES = list(dict.fromkeys(TASKS[task].family for task in config["tasks"]))
PLOTS = list(FIGURES)


def grid_train_records():
    """train.json of every trained cell of the grid (built-in and external methods)."""
    return sorted({os.path.join(os.path.dirname(os.path.dirname(cell)), "train.json") for cell in grid_cells()})


rule aggregate:
    input:
        cells=grid_cells(),
        base=base_cells(),
        data=[data_dir(task) for task in config["tasks"]],
        train_sets=[train_set_dir(ts) for ts in train_sets_for(config["tasks"])],
    output:
        md=f"{GRID}/leaderboard.md",
        page=report(f"{GRID}/report/leaderboard.html", caption="../report/leaderboard.rst", category="Leaderboard"),
        csv=f"{GRID}/leaderboard.csv",
        json=f"{GRID}/leaderboard.json",
        paired=f"{GRID}/paired.csv",
        pages=[report(f"{GRID}/report/{family}.html", caption="../report/family_page.rst", category=family,
                      subcategory="Tables", labels={"page": "tables, comparisons, costs, cells"})
               for family in GRID_FAMILIES],
        reproduction=report(f"{GRID}/report/reproduction.html", caption="../report/reproduction.rst",
                            category="Reproduction"),
    params:
        config=result_config(config),
        code=code_hash("lora_tsd.aggregate.tables"),
        families=GRID_FAMILIES,
    log:
        f"{GRID}/aggregate.log",
    script:
        "../scripts/aggregate.py"


rule plots:
    input:
        summary=f"{GRID}/leaderboard.json",
        train=grid_train_records(),
    output:
        **{name: report(f"{GRID}/plots/{{family}}/{name}.png", caption=f"../report/plots/{name}.rst",
                        category="{family}", subcategory="Figures", labels={"figure": name.replace("_", " ")})
           for name in PLOTS},
    params:
        code=code_hash("lora_tsd.aggregate.figures.draw"),
    wildcard_constraints:
        family="|".join(GRID_FAMILIES),
    log:
        f"{GRID}/plots/{{family}}.log",
    script:
        "../scripts/plots.py"
