# Method-specific stages that run before training. A method names its stage in the registry
# (Method.stage); train's input function pulls the stage's output in for that method only.


rule eva_init:
    input:
        model=model_input,
        data=lambda wc: train_set_dir(wc.train_set),
    output:
        GRID + "/stages/{model}/{train_set}/eva_r{rank}.pt",
    params:
        model_source=model_source,
        train=lambda wc: train_params(SimpleNamespace(**dict(wc.items()), method="eva")),
        code=code_hash("lora_tsd.methods.eva", "eva"),
    threads: 1
    resources:
        gpu=1,
        mem_mb=lambda wc, attempt: job_mem_mb(wc, attempt, dtype="float32"),
        runtime=lambda wc, input: train_minutes(SimpleNamespace(**dict(wc.items()), method="eva"), input),
    log:
        GRID + "/stages/{model}/{train_set}/eva_r{rank}.log",
    script:
        "../scripts/eva_init.py"
