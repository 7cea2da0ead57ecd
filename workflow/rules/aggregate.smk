# Comparison tables over every finished grid cell.


rule aggregate:
    input:
        cells=grid_cells(),
        base=base_cells(),
        data=expand("resources/data/{task}", task=config["tasks"]),
        train_sets=expand("resources/train_sets/{ts}", ts=train_sets_for(config["tasks"])),
    output:
        md=report(
            "results/leaderboard.md",
            caption="../report/leaderboard.rst",
            category="Leaderboard",
        ),
        csv="results/leaderboard.csv",
        json="results/leaderboard.json",
    params:
        config=config,
    log:
        "logs/aggregate.log",
    script:
        "../scripts/aggregate.py"
