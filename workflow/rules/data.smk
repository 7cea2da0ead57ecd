# Task data: normalised examples and the deterministic train/test carve; then the train sets
# the cells learn from. Both live under a key of the settings that make them (DATA_KEY).


rule prepare_task:
    priority: PRIORITY_ASSETS
    input:
        raw=lambda wc: (
            ["resources/raw/{task}"]
            if config["data_source"] == "embedded" and TASKS[wc.task].embedded
            else []
        ),
    output:
        directory(f"resources/data/{DATA_KEY}/{{task}}"),
    params:
        source=config["data_source"],
        split={**config["split"], **({"val_rows": VAL_ROWS} if VAL_ROWS else {})},  # a sweep's validation rows
        code=code_hash("lora_tsd.data.prepare"),
    log:
        f"logs/prepare_task/{DATA_KEY}/{{task}}.log",
    script:
        "../scripts/prepare_task.py"


rule build_train_set:
    priority: PRIORITY_ASSETS
    input:
        unpack(train_set_tasks),
    output:
        directory("resources/train_sets/{data}/{train_set}"),
    params:
        source=config["data_source"],
        train_data=lambda wc: config["train_data"].get(wc.train_set),
        code=code_hash("lora_tsd.data.prepare"),
    log:
        "logs/build_train_set/{data}/{train_set}.log",
    script:
        "../scripts/build_train_set.py"
