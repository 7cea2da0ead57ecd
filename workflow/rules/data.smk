# Task data: normalised examples and the deterministic train/test carve; then the train sets
# the cells learn from.


rule prepare_task:
    input:
        raw=lambda wc: (
            ["resources/raw/{task}"]
            if config["data_source"] == "embedded" and TASKS[wc.task].embedded
            else []
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


rule build_train_set:
    input:
        unpack(train_set_tasks),
    output:
        directory("resources/train_sets/{train_set}"),
    params:
        source=config["data_source"],
        train_data=lambda wc: config["train_data"].get(wc.train_set),
    log:
        "logs/build_train_set/{train_set}.log",
    script:
        "../scripts/build_train_set.py"
