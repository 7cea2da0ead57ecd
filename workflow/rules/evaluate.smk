# Scoring with lm-eval on the held-out split: each trained cell, and the untuned base model.


rule evaluate:
    input:
        model=model_input,
        data="resources/data/{task}",
        adapter=RUN + "/adapter",
        train=RUN + "/train.json",
    output:
        RUN + "/eval.json",
    params:
        model_name=model_name,
        model_source=model_source,
        eval=config["eval"],
    threads: 1
    resources:
        gpu=1,
    log:
        RUN + "/eval.log",
    script:
        "../scripts/evaluate.py"


rule evaluate_base:
    input:
        model=model_input,
        data="resources/data/{task}",
    output:
        BASE + "/eval.json",
    params:
        model_name=model_name,
        model_source=model_source,
        eval=config["eval"],
    threads: 1
    resources:
        gpu=1,
    log:
        BASE + "/eval.log",
    script:
        "../scripts/evaluate.py"
