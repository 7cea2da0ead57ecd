# One grid cell's training: method adapter on the base model, saved in peft's format.


rule train:
    input:
        model=model_input,
        data="resources/train_sets/{train_set}",
        stage=stage_input,
    output:
        adapter=directory(f"{RUN}/adapter"),
        metrics=f"{RUN}/train.json",
        analysis=f"{RUN}/tsd_analysis.npz",
    params:
        model_name=model_name,
        model_source=model_source,
        train=train_params,
        tsd=lambda wc: config["tsd"] if wc.method in TSD_METHODS else {},
        svd_cache=lambda wc: f"resources/svd/{wc.model}",
    threads: 1
    resources:
        gpu=1,
    log:
        f"{RUN}/train.log",
    script:
        "../scripts/train.py"
