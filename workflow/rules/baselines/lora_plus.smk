# LoRA+ (Hayou et al. 2024) as a baseline trained by its own rule: transformers' Trainer with
# peft's create_loraplus_optimizer (B learns loraplus_lr_ratio times faster than A). The example
# of a method that joins the grid through the run-folder contract (lora_tsd/pipeline/contract.py) instead
# of lora_tsd's training loop. Use it with configs/lora-plus.yaml.


rule train_lora_plus:
    priority: PRIORITY_TRAINING
    input:
        model=model_input,
        data=lambda wc: train_set_dir(wc.train_set),
    output:
        adapter=directory(external_run("lora_plus") + "/adapter"),
        metrics=external_run("lora_plus") + "/train.json",
    params:
        model_name=model_name,
        model_source=model_source,
        train=lambda wc: train_params(external_wildcards(wc, "lora_plus")),
        options={"loraplus_lr_ratio": 16, **EXTERNAL.get("lora_plus", {}).get("options", {})},
        code=file_hash("workflow/scripts/baselines/lora_plus.py"),
    threads: 1
    resources:
        gpu=1,
        mem_mb=lambda wc, attempt: job_mem_mb(external_wildcards(wc, "lora_plus"), attempt, dtype="float32"),
        runtime=lambda wc, input: train_minutes(external_wildcards(wc, "lora_plus"), input),
    log:
        external_run("lora_plus") + "/train.log",
    script:
        "../../scripts/baselines/lora_plus.py"
