"""Prompt formats. Alpaca's template wraps every instruction the causal models are trained and
scored on generatively; commonsense examples become Commonsense170K rows (the LLM-Adapters
format the paper trains on): an instruction listing the options, output "the correct answer
is <word>"."""
from __future__ import annotations

ALPACA = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)

# How each answer style names option i, and how the instruction introduces the options.
_STYLE = {
    "truefalse": ("Please answer the following question with true or false, question: {q}", None),
    "solution": ("Please choose the correct solution to the question: {q}", "Solution"),
    "answer": ("Please choose the correct answer to the question: {q}", "Answer"),
    "ending": ("Please choose the correct ending to complete the given sentence: {q}", "Ending"),
    "option": ("Please choose the correct answer to fill in the blank to complete the given sentence: {q}",
               "Option"),
}


def alpaca(instruction: str, input: str = "") -> str:
    if input:
        return ALPACA_WITH_INPUT.format(instruction=instruction, input=input)
    return ALPACA.format(instruction=instruction)


def answer_words(style: str, n: int) -> list[str]:
    """The word naming each choice: boolean tasks list choices as [no, yes]."""
    if style == "truefalse":
        return ["false", "true"]
    return [f"{style}{i + 1}" for i in range(n)]


def commonsense_row(example: dict, style: str) -> dict:
    """A normalised example {question, options, gold} as a Commonsense170K row."""
    head, label = _STYLE[style]
    words = answer_words(style, len(example["options"]))
    parts = [head.format(q=example["question"])]
    if label is not None:
        parts += [f"{label}{i + 1}: {opt}" for i, opt in enumerate(example["options"])]
    parts.append(f"Answer format: {'true/false' if style == 'truefalse' else '/'.join(words)}")
    answer = words[example["gold"]]
    return {"instruction": "\n\n".join(parts), "input": "", "output": f"the correct answer is {answer}",
            "answer": answer}


def answer_pattern(style: str, n: int) -> str:
    """Regex whose first match in a generation is the model's answer (longest words first, so
    'answer1' is never read out of 'answer10')."""
    return "(" + "|".join(sorted(answer_words(style, n), key=len, reverse=True)) + ")"
