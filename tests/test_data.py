import pytest

from lora_tsd import data
from lora_tsd.tasks import TASKS


def _examples(n):
    return [{"query": f"q{i}", "choices": ["a", "b"], "gold": i % 2} for i in range(n)]


def test_carve_is_disjoint_deterministic_and_order_free():
    exs = _examples(2000)
    train, test = data.carve(exs, 0.4, "salt")
    assert not {e["query"] for e in train} & {e["query"] for e in test}
    assert len(train) + len(test) == 2000
    assert 0.36 < len(test) / 2000 < 0.44
    train2, test2 = data.carve(list(reversed(exs)), 0.4, "salt")
    assert sorted(e["query"] for e in test2) == sorted(e["query"] for e in test)
    _, test3 = data.carve(exs, 0.4, "other-salt")
    assert {e["query"] for e in test3} != {e["query"] for e in test}


def test_carve_drops_exact_duplicates():
    exs = _examples(10) + _examples(10)
    train, test = data.carve(exs, 0.5, "s")
    assert len(train) + len(test) == 10


def test_encode_masks_prompt_and_matches_lm_eval_split(tokenizer):
    ex = {"query": "Question: what colour?\nAnswer:", "choices": ["red", "blue"], "gold": 1}
    enc = data.encode_example(tokenizer, ex, 64)
    whole = tokenizer(ex["query"] + " blue", add_special_tokens=False)["input_ids"]
    n_ctx = len(tokenizer(ex["query"], add_special_tokens=False)["input_ids"])
    assert enc["input_ids"] == whole
    assert enc["labels"][:n_ctx] == [-100] * n_ctx
    assert enc["labels"][n_ctx:] == whole[n_ctx:]
    assert tokenizer.decode(whole[n_ctx:]) == " blue"


def test_encode_truncates_from_the_left(tokenizer):
    ex = {"query": "word " * 50, "choices": ["end"], "gold": 0}
    enc = data.encode_example(tokenizer, ex, 16)
    assert len(enc["input_ids"]) == 16 and enc["labels"][-1] != -100


def test_collate_pads_right_and_ignores_padding():
    batch = data.collate([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
                          {"input_ids": [8], "labels": [8]}], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


@pytest.mark.parametrize("task,row,gold,n", [
    ("arc_easy", {"question": "Q", "choices": {"text": ["w", "x", "y", "z"], "label": ["A", "B", "C", "D"]},
                  "answerKey": "C"}, 2, 4),
    ("openbookqa", {"question_stem": "Q", "choices": "{'text': ['w', 'x'], 'label': ['A', 'B']}",
                    "answerKey": "B"}, 1, 2),
    ("boolq", {"question": "is it", "passage": "P", "answer": "False"}, 0, 2),
    ("boolq", {"question": "is it", "passage": "P", "answer": True}, 1, 2),
    ("piqa", {"goal": "G", "sol1": "a", "sol2": "b", "label": "1"}, 1, 2),
    ("social_iqa", {"context": "C", "question": "Q", "answerA": "a", "answerB": "b", "answerC": "c",
                    "label": "3"}, 2, 3),
    ("hellaswag", {"activity_label": "A", "ctx_a": "x.", "ctx_b": "he", "endings": ["e1", "e2", "e3", "e4"],
                   "label": "3"}, 3, 4),
    ("winogrande", {"sentence": "Sam beat Max so _ won.", "option1": "Sam", "option2": "Max", "answer": "1"}, 0, 2),
])
def test_task_normalisers(task, row, gold, n):
    ex = TASKS[task].to_example(row)
    assert ex["gold"] == gold and len(ex["choices"]) == n and isinstance(ex["query"], str)
    if task == "winogrande":
        assert ex["choices"][0] == "Sam beat Max so Sam won."
