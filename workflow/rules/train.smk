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
        # svd_cache is where SVDs are kept, not a result-changing option: it stays out of the params.
        tsd=lambda wc: {k: v for k, v in config["tsd"].items() if k != "svd_cache"} if wc.method in TSD_METHODS else {},
        svd_cache=lambda wc: f"resources/svd/{wc.model}" if config["tsd"]["svd_cache"] else None,
    threads: 1
    resources:
        gpu=1,
    log:
        f"{RUN}/train.log",
    script:
        "../scripts/train.py"
