# One grid cell's training: method adapter on the base model, saved in peft's format.


rule train:
    input:
        model=model_input,
        data=lambda wc: train_set_dir(wc.train_set),
        stage=stage_input,
    output:
        adapter=directory(f"{RUN}/adapter"),
        metrics=f"{RUN}/train.json",
        analysis=f"{RUN}/tsd_analysis.npz",
    params:
        model_name=model_name,
        model_source=model_source,
        train=train_params,
        tsd=tsd_params,
        code=train_code,
    threads: 1
    resources:
        gpu=1,
        mem_mb=lambda wc, attempt: job_mem_mb(wc, attempt, tsd=wc.method in TSD_METHODS),
        runtime=lambda wc, input: train_minutes(wc, input),
    log:
        f"{RUN}/train.log",
    script:
        "../scripts/train.py"
