# Scoring with lm-eval on the held-out split: each trained cell, and the untuned base model.


rule evaluate:
    input:
        model=model_input,
        data="resources/data/{task}",
        adapter="results/runs/{model}/{task}/{method}/r{rank}/s{seed}/adapter",
        train="results/runs/{model}/{task}/{method}/r{rank}/s{seed}/train.json",
    output:
        "results/runs/{model}/{task}/{method}/r{rank}/s{seed}/eval.json",
    params:
        model_name=model_name,
        model_source=model_source,
        eval=config["eval"],
    threads: 1
    resources:
        gpu=1,
    log:
        "results/runs/{model}/{task}/{method}/r{rank}/s{seed}/eval.log",
    script:
        "../scripts/evaluate.py"


rule evaluate_base:
    input:
        model=model_input,
        data="resources/data/{task}",
    output:
        "results/runs/{model}/{task}/base/eval.json",
    params:
        model_name=model_name,
        model_source=model_source,
        eval=config["eval"],
    threads: 1
    resources:
        gpu=1,
    log:
        "results/runs/{model}/{task}/base/eval.log",
    script:
        "../scripts/evaluate.py"
