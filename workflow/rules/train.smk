# One grid cell's training: method adapter on the base model, saved in peft's format.


rule train:
    priority: PRIORITY_TRAINING
    input:
        model=model_input,
        data=lambda wc: train_set_dir(wc.train_set),
        stage=stage_input,
        svds=svd_input,
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
        gpu=lambda wc: cell_options(wc)["gpus"],
        mem_mb=train_mem_mb,
        runtime=lambda wc, input: train_minutes(wc, input),
    wildcard_constraints:
        method="|".join(METHODS),  # external methods train through their own rule
    log:
        f"{RUN}/train.log",
    script:
        "../scripts/train.py"
