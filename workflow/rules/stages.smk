# Method-specific stages that run before training. A method names its stage in the registry
# (Method.stage); train's input function pulls the stage's output in for that method only.


rule eva_init:
    priority: PRIORITY_TRAINING
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
        "../scripts/stage.py"



# LoRA-GA's and LoRA-One's mean full gradient: one per model x train set x seed (a classifier's
# fresh head is drawn from the seed), shared by every rank, read by that method's cells only.
# As large as the adapted matrices in float32, but kept (as every stage is): deleted, it would
# be rebuilt, and every cell it fed retrained, for any later cell that needs it.
use rule eva_init as gradient_init with:
    output:
        GRID + "/stages/{model}/{train_set}/{method}_grad_s{seed}.pt",
    params:
        model_source=model_source,
        train=train_params,
        code=lambda wc: code_hash("lora_tsd.methods.lora_ga", wc.method),
    resources:
        gpu=1,
        mem_mb=lambda wc, attempt: job_mem_mb(wc, attempt, tsd=True, dtype="float32"),  # + a gradient per matrix
        runtime=lambda wc, input: train_minutes(wc, input),
    wildcard_constraints:
        method="|".join(m for m, spec in METHODS.items() if spec.stage == "gradient_init"),
    log:
        GRID + "/stages/{model}/{train_set}/{method}_grad_s{seed}.log",


# CorDA's covariances and their SVDs: one per model x train set x rank, shared by every seed.
use rule eva_init as corda_init with:
    output:
        GRID + "/stages/{model}/{train_set}/corda_r{rank}.pt",
    params:
        model_source=model_source,
        train=lambda wc: train_params(SimpleNamespace(**dict(wc.items()), method="corda")),
        code=code_hash("lora_tsd.methods.corda", "corda"),
    resources:
        gpu=1,
        mem_mb=lambda wc, attempt: job_mem_mb(wc, attempt, dtype="float32"),
        runtime=lambda wc, input: train_minutes(SimpleNamespace(**dict(wc.items()), method="corda"), input),
    log:
        GRID + "/stages/{model}/{train_set}/corda_r{rank}.log",


# Every SVD a model's cells read (svd_input in common.smk: the TSD methods, MiLoRA, any cell
# that traces its change rates), computed once per model x base-weight dtype x SVD dtype into
# the shared cache resources/svd/<model>/ before those cells, which then only read it (their
# switch_s and train_time_s no longer hold the cold SVDs). Its output is a manifest (key, shape
# and seconds per matrix); the entries are the cache's own files. Cells take it as an ancient
# input: a rerun of this stage (its code, the cache switched on or off) retrains nothing.
rule svd_cache:
    priority: PRIORITY_TRAINING
    input:
        model=model_input,
    output:
        "resources/svd/{model}/{base_dtype}-{svd_dtype}.json",
    params:
        model_source=model_source,
        kind=lambda wc: models.kind(model_name(wc), config["model_kinds"]),
        target_modules=lambda wc: config["target_modules"].get(model_name(wc)),
        cache_dir=lambda wc: svd_dir(wc.model) if config["tsd"]["svd_cache"] else None,
        code=code_hash("lora_tsd.methods.svds"),
    threads: 1
    # Cache off, it only writes its manifest: no GPU, where snakemake runs.
    localrule: not config["tsd"]["svd_cache"]
    resources:
        gpu=1 if config["tsd"]["svd_cache"] else 0,
        mem_mb=lambda wc, attempt: job_mem_mb(wc, attempt, tsd=True, dtype=wc.base_dtype),  # + a key's host copy
        runtime=svd_minutes,
    wildcard_constraints:
        base_dtype="auto|float32|bfloat16",
        svd_dtype="float32|float64",
    log:
        "resources/svd/{model}/{base_dtype}-{svd_dtype}.log",
    script:
        "../scripts/stage.py"
