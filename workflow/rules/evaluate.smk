# Scoring on a task's held-out rows with its family's protocols: each trained cell, and the
# untuned base model (an encoder's base has a fresh, seed-0 head: a chance-level reference).
# In a sweep, each cell is also scored on the task's validation rows, the same way: the only
# scores its selection reads.


rule evaluate:
    input:
        model=model_input,
        data=lambda wc: data_dir(wc.task),
        adapter=f"{RUN}/adapter",
        train=f"{RUN}/train.json",
    output:
        f"{RUN}/eval/{{task}}.json",
    params:
        model_name=model_name,
        model_source=model_source,
        eval=eval_params(),
        source=config["data_source"],
        code=code_hash("lora_tsd.evaluation.scoring"),
        producer=lambda wc: producer_rule(wc.method),
        split="test",
    threads: 1
    resources:
        gpu=1,
        mem_mb=eval_mem_mb,
        runtime=lambda wc, input: eval_minutes(wc, input),
    log:
        f"{RUN}/eval/{{task}}.log",
    script:
        "../scripts/evaluate.py"


rule evaluate_base:
    input:
        model=model_input,
        data=lambda wc: data_dir(wc.task),
    output:
        GRID + "/runs/{model}/base/{task}.json",
    params:
        model_name=model_name,
        model_source=model_source,
        eval=eval_params(),
        source=config["data_source"],
        code=code_hash("lora_tsd.evaluation.scoring"),
    threads: 1
    resources:
        gpu=1,
        mem_mb=eval_mem_mb,
        runtime=lambda wc, input: eval_minutes(wc, input),
    log:
        GRID + "/runs/{model}/base/{task}.log",
    script:
        "../scripts/evaluate.py"


use rule evaluate as validate with:
    output:
        f"{RUN}/val/{{task}}.json",
    params:
        model_name=model_name,
        model_source=model_source,
        eval=eval_params(),
        source=config["data_source"],
        code=code_hash("lora_tsd.evaluation.scoring"),
        producer=lambda wc: producer_rule(wc.method),
        split="val",
    log:
        f"{RUN}/val/{{task}}.log",
