# Hub models: fetched once into HF_HOME on the machine that runs snakemake (a local rule),
# before any job that loads them; those jobs then read HF_HOME offline.


rule download_model:
    priority: PRIORITY_ASSETS
    output:
        "resources/hub/{model}.json",
    params:
        name=model_name,
        kind=lambda wc: models.kind(model_name(wc), config["model_kinds"]),
    log:
        "logs/download_model/{model}.log",
    script:
        "../scripts/download_model.py"
