"""Evaluation: each family's protocols over a task's held-out rows.
- loglik (commonsense, protocol A): lm-eval zero-shot log-likelihood multiple choice, acc and
  acc_norm; our YAML task over the local split offline, the standard lm-eval task on hub configs.
- generative (commonsense, protocol B, the paper's): the Commonsense170K instruction in the
  Alpaca prompt, greedy or beam decoding, the first answer word taken by a regex filter.
- ifeval (instruction): lm-eval's IFEval task (its checkers and metrics) over the prompt file,
  with the Alpaca prompt the model was trained on.
- glue: the classifier's predictions scored by `evaluate`'s GLUE metric."""
from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import torch
import yaml

from . import atomic, data, faults, models, prompts, provenance
from .tasks import FAMILIES, TASKS

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
        row = data.commonsense_row(task, doc)
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


def load_for_eval(model_src: str, adapter: str | Path | None, kind: str = "causal", num_labels: int = 0,
                  dtype: torch.dtype = torch.float32):
    """Base model in `dtype` (causal LMs; encoders in float32), plus the saved peft adapter.
    In float32 the adapter is merged (exact, and cheaper to score). Over bf16 weights it stays
    a float32 side branch, as in training: merged, a small update would round away into W's
    8-bit mantissa. A saved full model (full fine-tuning) is loaded instead of the base weights."""
    full = adapter is not None and not (Path(adapter) / "adapter_config.json").exists()
    if kind == "encoder":
        model, tokenizer = models.load_classifier(str(adapter) if full else model_src, num_labels, seed=0)
        dtype = torch.float32
    elif full:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(adapter), dtype=dtype)
        tokenizer = models.load_tokenizer(model_src)
    else:
        model, tokenizer = models.load_causal_lm(model_src, dtype=dtype)
    if adapter is not None and not full:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
        if dtype == torch.float32:
            model = model.merge_and_unload()
    return model.eval(), tokenizer


def hflm(model, tokenizer, batch_size: int):
    """lm-eval's HF wrapper around an in-memory model (batched; left padding for generation)."""
    from lm_eval.models.huggingface import HFLM

    device, _ = models.pick_device()
    return HFLM(pretrained=model.to(device), tokenizer=tokenizer, batch_size=batch_size, device=str(device))


def lm_eval_run(lm, specs: dict[str, dict | str], limit, tmp: Path) -> dict:
    """Run lm-eval on task configs {protocol: yaml dict or standard task name}."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    names = {}
    for protocol, spec in specs.items():
        if isinstance(spec, str):
            names[protocol] = spec
            continue
        (tmp / f"{spec['task']}.yaml").write_text(yaml.safe_dump(spec))
        names[protocol] = spec["task"]
    # Our task files include lm-eval's own configs by path: lm-eval's task index (about 5 s to
    # build) is needed only when a protocol names a standard task (hub data).
    standard = any(isinstance(spec, str) for spec in specs.values())
    manager = TaskManager(include_path=str(tmp), include_defaults=standard)
    out = simple_evaluate(model=lm, tasks=list(names.values()), limit=limit, log_samples=True,
                          task_manager=manager, bootstrap_iters=1000)
    results = {}
    for protocol, name in names.items():
        res = out["results"][name]
        # Generative: exact match of the first answer word is the accuracy (scores and items alike).
        rename = {"exact_match": "acc", "exact_match_stderr": "acc_stderr"} if protocol == "generative" else {}
        clean = {rename.get(k.split(",")[0], k.split(",")[0]): v for k, v in res.items()
                 if "," in k and isinstance(v, (int, float))}
        n = out.get("n-samples", {}).get(name, {}).get("effective")
        results[protocol] = {"metrics": clean, "n_test": n,
                             "items": sample_items(out["samples"][name], rename)}
    return results


def _plain(value):
    """A per-item score as JSON: bools as 0/1, lists (IFEval's per-instruction checks) kept."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return int(value) if isinstance(value, bool) else float(value)


def sample_items(samples: list[dict], rename: dict[str, str]) -> dict:
    """lm-eval's logged samples as per-item columns (by doc_id): the paired comparisons and
    confidence intervals of the tables resample these. doc_hash (lm-eval's hash of the doc)
    lets a comparison prove two records scored the same items."""
    samples = sorted(samples, key=lambda s: s["doc_id"])
    metrics = samples[0]["metrics"] if samples else []
    items = {"doc_id": [s["doc_id"] for s in samples], "doc_hash": [s["doc_hash"][:16] for s in samples]}
    items.update({rename.get(m, m): [_plain(s[m]) for s in samples] for m in metrics})
    return items


def row_hash(row: dict) -> str:
    return hashlib.sha256(json.dumps(row, sort_keys=True).encode()).hexdigest()[:16]


def score_lm(model, tokenizer, task: str, test_file: str | Path, eval_cfg: dict, source: str) -> dict:
    """Every lm-eval protocol of the task's family that the config asks for, in one lm-eval run."""
    spec, wanted = TASKS[task], set(eval_cfg["protocols"])
    protocols = [p for p in FAMILIES[spec.family].protocols if p in wanted]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        specs = {}
        if "loglik" in protocols:
            specs["loglik"] = spec.lm_eval_task if source == "hub" else task_yaml(task, test_file)
        if "generative" in protocols:
            rendered = tmp / "generative.jsonl"
            rows = generative_rows(task, data.read_jsonl(test_file))
            rendered.write_text("".join(json.dumps(r) + "\n" for r in rows))
            specs["generative"] = generative_yaml(task, rendered, eval_cfg)
        if "ifeval" in protocols:
            from . import ifeval

            # Installs the offline Punkt model and seeds langdetect before lm-eval imports the checkers.
            ifeval.registry()
            specs["ifeval"] = ifeval_yaml(task, None if source == "hub" else test_file, eval_cfg)
        if not specs:
            return {}
        return lm_eval_run(hflm(model, tokenizer, eval_cfg["batch_size"]), specs, eval_cfg["limit"], tmp)


def score_glue(model, tokenizer, task: str, test_file: str | Path, eval_cfg: dict) -> dict:
    """Predict each held-out row, then score with the GLUE metric (per subset for MNLI)."""
    from . import metrics  # imports evaluate (~7 s): only GLUE cells pay for it

    rows = data.read_jsonl(test_file)[: eval_cfg["limit"] or None]
    device, _ = models.pick_device()
    model = model.to(device)
    preds = []
    with torch.no_grad():
        for i in range(0, len(rows), eval_cfg["batch_size"]):
            enc = [data.encode_classification(tokenizer, r, 512) for r in rows[i:i + eval_cfg["batch_size"]]]
            batch = {k: v.to(device) for k, v in data.collate_classification(enc, tokenizer.pad_token_id).items()
                     if k != "labels"}
            logits = model(**batch).logits
            preds += (logits[:, 0] if logits.shape[1] == 1 else logits.argmax(-1)).tolist()
    subsets = sorted({r.get("subset") for r in rows}, key=str)
    scores = {}
    for subset in subsets:
        idx = [i for i, r in enumerate(rows) if r.get("subset") == subset]
        name = task if subset is None else f"{task}_{subset}"
        result = metrics.load_glue(name).compute(predictions=[preds[i] for i in idx],
                                                 references=[rows[i]["label"] for i in idx])
        scores.update({k if subset is None else f"{k}_{subset}": float(v) for k, v in result.items()})
    items = {"doc_id": list(range(len(rows))), "doc_hash": [row_hash(r) for r in rows],
             "prediction": preds, "label": [r["label"] for r in rows], "subset": [r.get("subset") for r in rows]}
    return {"glue": {"metrics": scores, "n_test": len(rows), "items": items}}


def scoring_dtype(task: str, eval_cfg: dict) -> torch.dtype:
    """`eval.dtype` resolved for the device here; encoders (GLUE) score in float32."""
    if FAMILIES[TASKS[task].family].model_kind == "encoder":
        return torch.float32
    return models.weights_dtype(eval_cfg.get("dtype"), models.pick_device()[0])


def score(model_src: str, task: str, test_file: str | Path, adapter, eval_cfg: dict, source: str) -> dict:
    """Load the model (with its adapter merged) and score it with the task family's protocols."""
    spec = TASKS[task]
    model, tokenizer = load_for_eval(model_src, adapter, FAMILIES[spec.family].model_kind, spec.num_labels,
                                     scoring_dtype(task, eval_cfg))
    if spec.family == "glue":
        return score_glue(model, tokenizer, task, test_file, eval_cfg)
    return score_lm(model, tokenizer, task, test_file, eval_cfg, source)


def run(model_name: str, model_src: str, task: str, test_file: str | Path, adapter: str | Path | None,
        eval_cfg: dict, out: str | Path, run_info: dict, source: str = "embedded", threads: int = 1) -> dict:
    torch.set_num_threads(threads)
    eval_cfg = {**DEFAULT_EVAL, **eval_cfg}
    spec = TASKS[task]
    diverged = run_info.get("train", {}).get("diverged")
    if diverged:  # a result to report, not a model to score
        results = {}
    else:
        what = f"scoring {model_name} {run_info.get('method', 'base')} on {task}"
        with faults.out_of_memory(what, faults.eval_levers(eval_cfg)):
            results = score(model_src, task, test_file, adapter, eval_cfg, source)
    record = {"model": model_name, "task": task, "family": spec.family, "train_set": spec.train_set,
              "diverged": diverged, "eval_dtype": str(scoring_dtype(task, eval_cfg)).removeprefix("torch."),
              "protocols": {p: PROTOCOLS[p] for p in results}, "eval_config": eval_cfg, **run_info,
              "results": results, "packages": provenance.package_versions(), "git_commit": provenance.git_commit()}
    atomic.write_json(out, record)
    return record
