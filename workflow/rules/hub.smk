# Hub models: fetched once into HF_HOME on the machine that runs snakemake (a local rule),
# before any job that loads them; those jobs then read HF_HOME offline.


rule download_model:
    output:
        "resources/hub/{model}.json",
    params:
        name=model_name,
        kind=lambda wc: models.kind(model_name(wc), config["model_kinds"]),
    log:
        "logs/download_model/{model}.log",
    run:
        hub.download_model(params.name, params.kind, output[0])
