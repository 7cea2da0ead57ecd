"""The evaluation protocols, by name, and the lm-eval task YAMLs that carry them:
- loglik (commonsense, protocol A): lm-eval zero-shot log-likelihood multiple choice, acc and
  acc_norm; our YAML task over the local split offline, the standard lm-eval task on hub configs.
- generative (commonsense, protocol B, the paper's): the Commonsense170K instruction in the
  Alpaca prompt, greedy or beam decoding, the first answer word taken by a regex filter.
- ifeval (instruction): lm-eval's IFEval task (its checkers and metrics) over the prompt file,
  with the Alpaca prompt the model was trained on.
- glue: the classifier's predictions scored by `evaluate`'s GLUE metric (scoring.py)."""
from __future__ import annotations

from pathlib import Path

from ..data import prompts
from ..data.prepare import commonsense_row
from ..data.tasks import TASKS

PROTOCOLS = {
    "loglik": "lm-eval 0-shot log-likelihood multiple choice, lm-eval's own task configs (acc, acc_norm)",
    "generative": "generative, LLM-Adapters' prompts and extract_answer (first answer word; acc)",
    "ifeval": "lm-eval IFEval checkers on Alpaca-prompted generations (prompt/instruction-level, strict/loose)",
    "glue": "classifier predictions scored with evaluate's GLUE metric",
}
# Table column order per protocol (lm-eval returns metrics alphabetically).
METRIC_ORDER = {"loglik": ["acc", "acc_norm"],
                "ifeval": ["prompt_level_strict_acc", "inst_level_strict_acc",
                           "prompt_level_loose_acc", "inst_level_loose_acc"]}
DEFAULT_EVAL = {"protocols": ["loglik", "generative", "ifeval", "glue"], "num_beams": 1,
                "max_gen_toks": 32, "ifeval_max_gen_toks": 1280, "dtype": "auto"}


def _data_files(path: str | Path) -> dict:
    # Absolute: lm-eval resolves data_files against the working directory.
    return {"dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(Path(path).resolve())}},
            "test_split": "test"}


def lm_eval_config(task: str) -> tuple[Path, dict]:
    """The installed lm-eval's own config of a task (includes and !function resolved)."""
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml

    path = Path(lm_eval.tasks.__file__).parent / TASKS[task].lm_eval_yaml
    return path, load_yaml(path, resolve_func=False)


def task_yaml(task: str, test_file: str | Path) -> dict:
    """Protocol A offline: lm-eval's own task config, included unchanged (its process_docs,
    doc_to_text, doc_to_choice, doc_to_target, WinoGrande's partial scoring), with only the
    dataset swapped for our held-out rows, stored in the schema that config reads."""
    path, cfg = lm_eval_config(task)
    split = cfg.get("test_split") or cfg["validation_split"]  # the split lm-eval scores
    return {
        "include": str(path), "task": f"lora_tsd_{task}", "tag": [],
        "dataset_path": "json", "dataset_name": None,
        "dataset_kwargs": {"data_files": {split: str(Path(test_file).resolve())}},
        "training_split": None, "fewshot_split": None,
        "validation_split": split if split == cfg.get("validation_split") else None,
        "test_split": split if split == cfg.get("test_split") else None,
    }


def generative_rows(task: str, test_rows: list[dict]) -> list[dict]:
    """Each held-out row as LLM-Adapters' test.json row in commonsense_evaluate.py's prompt."""
    rows = []
    for doc in test_rows:
        row = commonsense_row(task, doc)
        rows.append({"prompt": prompts.llm_adapters_eval(row["instruction"]), "answer": row["answer"]})
    return rows


def generative_yaml(task: str, rendered_file: str | Path, eval_cfg: dict) -> dict:
    """Protocol B as an lm-eval generate_until task: decode, then LLM-Adapters' extract_answer
    (its regex for the task, first match, "" when none) and exact match with the answer word."""
    style = TASKS[task].answer_style
    return {
        "task": f"lora_tsd_gen_{task}", **_data_files(rendered_file),
        "output_type": "generate_until",
        "doc_to_text": "{{prompt}}", "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": [], "do_sample": False, "num_beams": eval_cfg["num_beams"],
                              "max_gen_toks": eval_cfg["max_gen_toks"]},
        "filter_list": [{"name": "first_answer_word", "filter": [
            {"function": "regex", "regex_pattern": prompts.answer_pattern(style), "group_select": 0,
             "fallback": ""},
            {"function": "take_first"}]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def ifeval_yaml(task: str, test_file: str | Path | None, eval_cfg: dict) -> dict:
    """lm-eval's own IFEval task config (included from the installed lm-eval, so its checkers
    and metrics are used unchanged), with the Alpaca prompt and our data (None: google/IFEval)."""
    import lm_eval.tasks

    included = Path(lm_eval.tasks.__file__).parent / "ifeval" / "ifeval.yaml"
    alpaca = prompts.ALPACA.replace("{instruction}", "{{prompt}}")
    spec = {"include": str(included), "task": f"lora_tsd_{task}", "doc_to_text": alpaca,
            "generation_kwargs": {"until": [], "do_sample": False, "max_gen_toks": eval_cfg["ifeval_max_gen_toks"]}}
    if test_file is not None:
        spec.update(_data_files(test_file))
    return spec
