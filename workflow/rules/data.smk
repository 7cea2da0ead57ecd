# Task data: normalised examples and the deterministic train/test carve.


rule prepare_task:
    input:
        raw=lambda wc: (
            ["resources/raw/{task}"] if config["data_source"] == "embedded" else []
        ),
    output:
        directory("resources/data/{task}"),
    params:
        source=config["data_source"],
        split=config["split"],
    log:
        "logs/prepare_task/{task}.log",
    script:
        "../scripts/prepare_task.py"
