# Method-specific stages that run before training. A method names its stage in the registry
# (Method.stage); train's input function below pulls the stage's output in for that method only.


rule eva_init:
    input:
        model=model_input,
        data="resources/data/{task}",
    output:
        "resources/init/{model}/{task}/eva_r{rank}.pt",
    params:
        model_source=model_source,
        train=lambda wc: {**config["train"], **config["method_train"].get("eva", {})},
    threads: 1
    resources:
        gpu=1,
    log:
        "logs/eva_init/{model}/{task}/r{rank}.log",
    script:
        "../scripts/eva_init.py"

