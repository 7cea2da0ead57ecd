# One grid cell's training: method adapter on the base model, saved in peft's format.


rule train:
    input:
        model=model_input,
        data="resources/data/{task}",
        stage=stage_input,
    output:
        adapter=directory("results/runs/{model}/{task}/{method}/r{rank}/s{seed}/adapter"),
        metrics="results/runs/{model}/{task}/{method}/r{rank}/s{seed}/train.json",
        analysis="results/runs/{model}/{task}/{method}/r{rank}/s{seed}/tsd_analysis.npz",
    params:
        model_name=model_name,
        model_source=model_source,
        train=lambda wc: {**config["train"], **config["method_train"].get(wc.method, {})},
        tsd=lambda wc: config["tsd"] if wc.method in TSD_METHODS else {},
        svd_cache=lambda wc: f"resources/svd/{wc.model}",
    threads: 1
    resources:
        gpu=1,
    log:
        "results/runs/{model}/{task}/{method}/r{rank}/s{seed}/train.log",
    script:
        "../scripts/train.py"
