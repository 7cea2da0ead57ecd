"""Evaluation bridge to lm-eval: the held-out split of a task becomes an lm-eval YAML task
(log-likelihood multiple choice, acc and acc_norm), scored by HFLM over the base model with
or without a peft adapter."""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import yaml

from . import atomic, models, provenance

PROTOCOL = "lm-eval 0-shot log-likelihood multiple choice (acc, acc_norm)"
METRIC_KEYS = ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr")


def task_yaml(task: str, test_file: str | Path) -> dict:
    """An lm-eval task over our normalised test split. Paths are absolute because lm-eval
    resolves data_files against the working directory."""
    return {
        "task": f"lora_tsd_{task}",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(Path(test_file).resolve())}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{query}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{gold}}",
        "target_delimiter": " ",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
    }


def load_for_eval(model_src: str, adapter: str | Path | None):
    """Base model, plus the saved peft adapter merged in (merging is exact and makes scoring
    cheaper). A saved full model (full fine-tuning) is loaded instead of the base weights."""
    if adapter is not None and not (Path(adapter) / "adapter_config.json").exists():
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(adapter), dtype=torch.float32)
        return model.eval(), models.load_tokenizer(model_src)
    model, tokenizer = models.load_causal_lm(model_src)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return model.eval(), tokenizer


def score(model, tokenizer, task: str, test_file: str | Path, limit: int | None, batch_size: int) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    device, _ = models.pick_device()
    lm = HFLM(pretrained=model.to(device), tokenizer=tokenizer, batch_size=batch_size, device=str(device))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / f"{task}.yaml").write_text(yaml.safe_dump(task_yaml(task, test_file)))
        out = simple_evaluate(model=lm, tasks=[f"lora_tsd_{task}"], limit=limit, log_samples=False,
                              task_manager=TaskManager(include_path=tmp), bootstrap_iters=1000)
    res = out["results"][f"lora_tsd_{task}"]
    n = out.get("n-samples", {}).get(f"lora_tsd_{task}", {}).get("effective")
    clean = {k.split(",")[0]: v for k, v in res.items() if k.split(",")[0] in METRIC_KEYS}
    return {"metrics": clean, "n_test": n}


def run(model_name: str, model_src: str, task: str, test_file: str | Path, adapter: str | Path | None,
        eval_cfg: dict, out: str | Path, run_info: dict, threads: int = 1) -> dict:
    torch.set_num_threads(threads)
    model, tokenizer = load_for_eval(model_src, adapter)
    result = score(model, tokenizer, task, test_file, eval_cfg["limit"], eval_cfg["batch_size"])
    record = {"model": model_name, "task": task, "protocol": PROTOCOL, "eval_config": eval_cfg,
              **run_info, **result, "packages": provenance.package_versions(),
              "git_commit": provenance.git_commit()}
    atomic.write_json(out, record)
    return record
