# The paper's exploration of task-specific directions over every cell of the grid: full
# fine-tuning's change defines the true TSDs; each question gets a table, a figure and a section
# of the report page (lora_tsd/aggregate/explore/). A grid without the cells a question needs
# still gets the page, saying what it lacks.
EXPLORE_TABLES = ["spectrum", "recall", "amplification", "selection", "task_overlap", "ablation"]
EXPLORE_FIGURES = ["spectrum", "recall", "amplification", "task_overlap", "ablation"]


def swept_dash_options():
    """The dash's t and s where a sweep names them (the paper's t and s ablations)."""
    return sorted(sweep.named_keys(config) & {"tsd.dash_t", "tsd.dash_s"})


rule explore:
    input:
        summary=f"{GRID}/leaderboard.json",
        train=grid_train_records(),
    output:
        page=report(f"{GRID}/report/directions.html", caption="../report/directions.rst",
                    category="Task-specific directions"),
        tables=[f"{GRID}/explore/tsd_{name}.csv" for name in EXPLORE_TABLES],
        figures=[f"{GRID}/explore/tsd_{name}.png" for name in EXPLORE_FIGURES],
    params:
        code=code_hash("lora_tsd.aggregate.explore.page"),
        ranks=config["ranks"],
        swept=swept_dash_options(),
    log:
        f"{GRID}/explore/explore.log",
    script:
        "../scripts/explore.py"
