# Scoring on a task's held-out rows with its family's protocols: each trained cell, and the
# untuned base model (an encoder's base has a fresh, seed-0 head: a chance-level reference).


rule evaluate:
    input:
        model=model_input,
        data="resources/data/{task}",
        adapter=f"{RUN}/adapter",
        train=f"{RUN}/train.json",
    output:
        f"{RUN}/eval/{{task}}.json",
    params:
        model_name=model_name,
        model_source=model_source,
        eval=config["eval"],
        source=config["data_source"],
    threads: 1
    resources:
        gpu=1,
    log:
        f"{RUN}/eval/{{task}}.log",
    script:
        "../scripts/evaluate.py"


rule evaluate_base:
    input:
        model=model_input,
        data="resources/data/{task}",
    output:
        "results/runs/{model}/base/{task}.json",
    params:
        model_name=model_name,
        model_source=model_source,
        eval=config["eval"],
        source=config["data_source"],
    threads: 1
    resources:
        gpu=1,
    log:
        "results/runs/{model}/base/{task}.log",
    script:
        "../scripts/evaluate.py"
