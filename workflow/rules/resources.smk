# Job sizes for a scheduler (lora_tsd/pipeline/sizing.py has the formulas): host memory from the
# model's parameter count, run time from the cell's FLOPs, both from the config. A local run
# computes them (a dry run prints them) but is capped by none unless --resources names one.
from lora_tsd.pipeline import sizing


def n_params(wildcards):
    name = model_name(wildcards)
    kind = models.kind(name, config["model_kinds"])
    try:
        return sizing.param_count(name, kind, config["cluster"]["model_params"].get(name), hub_marker(wildcards.model))
    except sizing.SizingError:
        if workflow.local_exec:  # sizes cap nothing locally: an unsized model must not stop the run
            return 0
        raise


def job_mem_mb(wildcards, attempt, tsd=False, dtype=None):
    """mem_mb of a GPU job: weights as loaded (in `dtype`) x 1.5 (x 2 for TSD methods) + overhead, x 1.5 on retries."""
    kind = models.kind(model_name(wildcards), config["model_kinds"])
    size = sizing.load_bytes(dtype, trains_weights(getattr(wildcards, "method", None)), kind)
    return sizing.mem_mb(n_params(wildcards), config["cluster"], attempt, tsd, size)


def train_mem_mb(wildcards, attempt):
    """TSD methods hold SVDs; full fine-tuning with analysis_every a float32 copy of its W0."""
    options = cell_options(wildcards)
    extra = wildcards.method in TSD_METHODS or (trains_weights(wildcards.method) and bool(options.get("analysis_every")))
    return job_mem_mb(wildcards, attempt, extra, options["base_dtype"])


def eval_mem_mb(wildcards, attempt):
    return job_mem_mb(wildcards, attempt, dtype=config["eval"]["dtype"])


def train_minutes(wildcards, input):
    """runtime of a training job: start-up + 2 x (6 x params x steps x batch x max_length) at cluster.tflops."""
    options = cell_options(wildcards)
    return sizing.train_runtime(n_params(wildcards), options, config["cluster"], input.get("data"),
                                config["tsd"], wildcards.method)


def svd_minutes(wildcards):
    """runtime of the SVD stage: start-up + the SVDs of a model's weights (sizing.svd_runtime)."""
    return sizing.svd_runtime(n_params(wildcards), config["cluster"])


def eval_minutes(wildcards, input):
    """runtime of an evaluation job: start-up + 2 x (2 x params x tokens scored) at cluster.tflops,
    tokens per row from the task's protocols (choices x max_length, generated tokens x beams)."""
    task, e = TASKS[wildcards.task], config["eval"]
    length = cell_train(config, task.family, task.train_set, "lora")["max_length"]
    prompt = {"commonsense": 5 * length}.get(task.family, length)  # 4 choices + the generative prompt
    gen = {"commonsense": e["max_gen_toks"] * e["num_beams"], "instruction": e["ifeval_max_gen_toks"]}
    return sizing.eval_runtime(n_params(wildcards), sizing.test_rows(e, input.get("data")), prompt,
                               gen.get(task.family, 0), config["cluster"])
