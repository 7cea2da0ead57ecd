# Comparison tables over every finished grid cell.


rule aggregate:
    input:
        cells=grid_cells(),
        base=base_cells(),
        data=[data_dir(task) for task in config["tasks"]],
        train_sets=[train_set_dir(ts) for ts in train_sets_for(config["tasks"])],
    output:
        md=report(
            f"{GRID}/leaderboard.md",
            caption="../report/leaderboard.rst",
            category="Leaderboard",
        ),
        csv=f"{GRID}/leaderboard.csv",
        json=f"{GRID}/leaderboard.json",
        paired=f"{GRID}/paired.csv",
    params:
        config=result_config(config),
        code=code_hash("lora_tsd.aggregate"),
    log:
        f"{GRID}/aggregate.log",
    script:
        "../scripts/aggregate.py"
