# Method-specific stages that run before training. A method names its stage in the registry
# (Method.stage); train's input function pulls the stage's output in for that method only.


rule eva_init:
    input:
        model=model_input,
        data="resources/train_sets/{train_set}",
    output:
        "resources/init/{model}/{train_set}/eva_r{rank}.pt",
    params:
        model_source=model_source,
        train=lambda wc: train_params(SimpleNamespace(**dict(wc.items()), method="eva")),
    threads: 1
    resources:
        gpu=1,
    log:
        "logs/eva_init/{model}/{train_set}/r{rank}.log",
    script:
        "../scripts/eva_init.py"
