"""Prompt formats, byte for byte as the reference code writes them.

Commonsense (the paper's protocol, inherited from LLM-Adapters / DoRA / LoRA-Dash): a task row
becomes an instruction that names the options ("Answer1: ...") and an "Answer format" line; the
target output is "the correct answer is <word>". LLM-Adapters wraps it in two Alpaca variants
that differ in whitespace: `finetune.py`'s for training (two spaces after "request.", indented
lines, a blank line of spaces) and `commonsense_evaluate.py`'s for generation (one space). Tests
rebuild LLM-Adapters' own rows and prompts from raw task rows
(`tests/fixtures/llm_adapters/`). The instruction family uses the standard Alpaca template.
"""
from __future__ import annotations

from dataclasses import dataclass

ALPACA = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)

# LLM-Adapters' templates. Their source indents the lines of a triple-quoted f-string by 16
# spaces, and those spaces are part of every prompt the paper trained and scored on.
_PAD = " " * 16
LLM_ADAPTERS_TRAIN = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.  \n\n" + _PAD + "### Instruction:\n" + _PAD + "{instruction}\n" + _PAD + "\n"
    + _PAD + "### Response:\n" + _PAD + "{output}"
)
LLM_ADAPTERS_TRAIN_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request. \n\n" + _PAD + "### Instruction:\n" + _PAD
    + "{instruction}\n" + _PAD + "\n" + _PAD + "### Input:\n" + _PAD + "{input}\n" + _PAD + "\n" + _PAD
    + "### Response:\n" + _PAD + "{output}"
)
LLM_ADAPTERS_EVAL = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request. \n\n" + _PAD + "### Instruction:\n" + _PAD + "{instruction}\n\n" + _PAD + "### Response:\n" + _PAD
)


def alpaca(instruction: str, input: str = "") -> str:
    if input:
        return ALPACA_WITH_INPUT.format(instruction=instruction, input=input)
    return ALPACA.format(instruction=instruction)


def llm_adapters_train(instruction: str, input: str = "", output: str = "") -> str:
    """finetune.py's training text; with output "" it is the prompt whose tokens
    train_on_inputs=False masks."""
    template = LLM_ADAPTERS_TRAIN_WITH_INPUT if input else LLM_ADAPTERS_TRAIN
    return template.format(instruction=instruction, input=input, output=output)


def llm_adapters_eval(instruction: str) -> str:
    """commonsense_evaluate.py's generation prompt (its rows have no input)."""
    return LLM_ADAPTERS_EVAL.format(instruction=instruction)


TEMPLATES = {"alpaca": lambda row: alpaca(row["instruction"], row.get("input") or ""),
             "llm_adapters": lambda row: llm_adapters_train(row["instruction"], row.get("input") or "")}


@dataclass(frozen=True)
class Layout:
    """How an answer style lays out an instruction: the question line, each option's label,
    what joins the options, what precedes the "Answer format:" line, and the answer words
    LLM-Adapters' extract_answer looks for (in its order)."""

    head: str
    label: str | None
    option_sep: str
    format_sep: str
    words: tuple[str, ...]


LAYOUTS = {
    "truefalse": Layout("Please answer the following question with true or false, question: {q}", None,
                        "", "\n\n", ("true", "false")),
    "solution": Layout("Please choose the correct solution to the question: {q}", "Solution", "\n\n", "\n\n",
                       ("solution1", "solution2")),
    "answer": Layout("Please choose the correct answer to the question: {q}", "Answer", " ", "\n\n",
                     ("answer1", "answer2", "answer3", "answer4", "answer5")),
    "ending": Layout("Please choose the correct ending to complete the given sentence: {q}", "Ending", " ", "\n\n",
                     ("ending1", "ending2", "ending3", "ending4")),
    "option": Layout("Please choose the correct answer to fill in the blank to complete the given sentence: {q}",
                     "Option", " ", " ", ("option1", "option2")),
}


def answer_words(style: str, n: int) -> list[str]:
    """The word naming each of n choices: boolean tasks list choices as [no, yes]."""
    if style == "truefalse":
        return ["false", "true"]
    return [f"{style}{i + 1}" for i in range(n)]


def commonsense_row(question: str, options: list[str], gold: int, style: str) -> dict:
    """A multiple-choice item as an LLM-Adapters row {instruction, input, output, answer}."""
    lay = LAYOUTS[style]
    words = answer_words(style, len(options))
    instruction = lay.head.format(q=question)
    if lay.label is not None:
        instruction += "\n\n" + lay.option_sep.join(f"{lay.label}{i + 1}: {o}" for i, o in enumerate(options))
    answer_format = "true/false" if style == "truefalse" else "/".join(words)
    instruction += f"{lay.format_sep}Answer format: {answer_format}"
    answer = words[gold]
    return {"instruction": instruction, "input": "", "output": f"the correct answer is {answer}", "answer": answer}


def answer_pattern(style: str) -> str:
    """The regex LLM-Adapters' extract_answer runs for the style (first match = the answer)."""
    return "|".join(LAYOUTS[style].words)
