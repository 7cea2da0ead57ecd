"""Scoring a cell (or the untuned base model) on a task's held-out rows, per protocol
(protocols.py names them): lm-eval over an in-memory model for causal LMs, the classifier's
predictions and `evaluate`'s GLUE metric for encoders; per-item scores kept for the statistics."""
from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import torch
import yaml

from .. import atomic, faults, models, provenance
from ..data.encoding import collate_classification, encode_classification
from ..data.prepare import read_jsonl
from ..data.tasks import FAMILIES, TASKS
from .protocols import DEFAULT_EVAL, PROTOCOLS, generative_rows, generative_yaml, ifeval_yaml, task_yaml


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


def _jsonable(value):
    """A per-item score as JSON: bools as 0/1, lists (IFEval's per-instruction checks) kept."""
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return int(value) if isinstance(value, bool) else float(value)


def sample_items(samples: list[dict], rename: dict[str, str]) -> dict:
    """lm-eval's logged samples as per-item columns (by doc_id): the paired comparisons and
    confidence intervals of the tables resample these. doc_hash (lm-eval's hash of the doc)
    lets a comparison prove two records scored the same items."""
    samples = sorted(samples, key=lambda s: s["doc_id"])
    metrics = samples[0]["metrics"] if samples else []
    items = {"doc_id": [s["doc_id"] for s in samples], "doc_hash": [s["doc_hash"][:16] for s in samples]}
    items.update({rename.get(m, m): [_jsonable(s[m]) for s in samples] for m in metrics})
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
            rows = generative_rows(task, read_jsonl(test_file))
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

    rows = read_jsonl(test_file)[: eval_cfg["limit"] or None]
    device, _ = models.pick_device()
    model = model.to(device)
    preds = []
    with torch.no_grad():
        for i in range(0, len(rows), eval_cfg["batch_size"]):
            enc = [encode_classification(tokenizer, r, 512) for r in rows[i:i + eval_cfg["batch_size"]]]
            batch = {k: v.to(device) for k, v in collate_classification(enc, tokenizer.pad_token_id).items()
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
    model, tokenizer = models.load_for_eval(model_src, adapter, FAMILIES[spec.family].model_kind, spec.num_labels,
                                            scoring_dtype(task, eval_cfg))
    if spec.family == "glue":
        return score_glue(model, tokenizer, task, test_file, eval_cfg)
    return score_lm(model, tokenizer, task, test_file, eval_cfg, source)


def run(model_name: str, model_src: str, task: str, test_file: str | Path, adapter: str | Path | None,
        eval_cfg: dict, out: str | Path, run_info: dict, source: str = "embedded", threads: int = 1,
        split: str = "test") -> dict:
    """Score and write the record; split "val" scores a sweep's validation rows, always from
    the local file (a hub config's standard lm-eval task would read the hub's test split)."""
    torch.set_num_threads(threads)
    eval_cfg = {**DEFAULT_EVAL, **eval_cfg}
    spec = TASKS[task]
    diverged = run_info.get("train", {}).get("diverged")
    if diverged:  # a result to report, not a model to score
        results = {}
    else:
        what = f"scoring {model_name} {run_info.get('method', 'base')} on {task}"
        with faults.out_of_memory(what, faults.eval_levers(eval_cfg)):
            results = score(model_src, task, test_file, adapter, eval_cfg, source if split == "test" else "embedded")
    dtype = scoring_dtype(task, eval_cfg)
    record = {"model": model_name, "task": task, "family": spec.family, "train_set": spec.train_set,
              **({} if split == "test" else {"split": split}),
              "diverged": diverged, "eval_dtype": str(dtype).removeprefix("torch."),
              "protocols": {p: PROTOCOLS[p] for p in results}, "eval_config": eval_cfg, **run_info,
              "results": results, "packages": provenance.package_versions(), "git_commit": provenance.git_commit(),
              "hardware": provenance.hardware(compute_dtype=dtype)}
    atomic.write_json(out, record)
    return record
