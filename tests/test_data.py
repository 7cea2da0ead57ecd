import json

import pytest

from lora_tsd.data import encoding, prepare
from lora_tsd.data.tasks import TASKS


def _examples(n):
    return [{"query": f"q{i}", "choices": ["a", "b"], "gold": i % 2} for i in range(n)]


def test_carve_is_disjoint_deterministic_and_order_free():
    exs = _examples(2000)
    train, test = prepare.carve(exs, 0.4, "salt")
    assert not {e["query"] for e in train} & {e["query"] for e in test}
    assert len(train) + len(test) == 2000
    assert 0.36 < len(test) / 2000 < 0.44
    train2, test2 = prepare.carve(list(reversed(exs)), 0.4, "salt")
    assert sorted(e["query"] for e in test2) == sorted(e["query"] for e in test)
    _, test3 = prepare.carve(exs, 0.4, "other-salt")
    assert {e["query"] for e in test3} != {e["query"] for e in test}


def test_carve_drops_exact_duplicates():
    exs = _examples(10) + _examples(10)
    train, test = prepare.carve(exs, 0.5, "s")
    assert len(train) + len(test) == 10


def test_encode_masks_prompt_and_matches_lm_eval_split(tokenizer):
    ex = {"query": "Question: what colour?\nAnswer:", "choices": ["red", "blue"], "gold": 1}
    enc = encoding.encode_example(tokenizer, ex, 64)
    whole = tokenizer(ex["query"] + " blue", add_special_tokens=False)["input_ids"]
    n_ctx = len(tokenizer(ex["query"], add_special_tokens=False)["input_ids"])
    assert enc["input_ids"] == whole
    assert enc["labels"][:n_ctx] == [-100] * n_ctx
    assert enc["labels"][n_ctx:] == whole[n_ctx:]
    assert tokenizer.decode(whole[n_ctx:]) == " blue"


def test_encode_truncates_from_the_left(tokenizer):
    ex = {"query": "word " * 50, "choices": ["end"], "gold": 0}
    enc = encoding.encode_example(tokenizer, ex, 16)
    assert len(enc["input_ids"]) == 16 and enc["labels"][-1] != -100


def test_collate_pads_right_and_ignores_padding():
    batch = encoding.collate_causal([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
                                     {"input_ids": [8], "labels": [8]}], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


@pytest.mark.parametrize("task,row,gold,n", [
    ("arc_easy", {"question": "Q", "choices": {"text": ["w", "x", "y", "z"], "label": ["A", "B", "C", "D"]},
                  "answerKey": "C"}, 2, 4),
    ("arc_easy", {"question": "Q", "choices": {"text": ["w", "x", "y"], "label": ["1", "2", "3"]},
                  "answerKey": "3"}, 2, 3),
    ("openbookqa", {"question_stem": "Q", "choices": "{'text': ['w', 'x'], 'label': ['A', 'B']}",
                    "answerKey": "B"}, 1, 2),
    ("boolq", {"question": "is it", "passage": "P", "answer": "False"}, 0, 2),
    ("boolq", {"question": "is it", "passage": "P", "answer": True}, 1, 2),
    ("boolq", {"question": "is it", "passage": "P", "idx": 4, "label": 1}, 1, 2),  # super_glue schema
    ("piqa", {"goal": "G", "sol1": "a", "sol2": "b", "label": "1"}, 1, 2),
    ("social_iqa", {"context": "C", "question": "Q", "answerA": "a", "answerB": "b", "answerC": "c",
                    "label": "3"}, 2, 3),
    ("hellaswag", {"activity_label": "A", "ctx_a": "x.", "ctx_b": "he", "ctx": "x. he",
                   "endings": ["e1", "e2", "e3", "e4"], "label": "3"}, 3, 4),
    ("winogrande", {"sentence": "Sam beat Max so _ won.", "option1": "Sam", "option2": "Max", "answer": "1"}, 0, 2),
])
def test_task_rows_and_items(task, row, gold, n):
    doc = TASKS[task].to_example(row)
    question, options, g = TASKS[task].item(doc)
    assert g == gold and len(options) == n and isinstance(question, str)
    assert json.loads(json.dumps(doc)) == doc  # stored as plain JSON
    if task == "boolq":  # stored in super_glue's schema, the one lm-eval's boolq reads
        assert set(doc) == {"question", "passage", "idx", "label"} and doc["label"] == gold
    if task == "openbookqa":
        assert doc["choices"] == {"text": ["w", "x"], "label": ["A", "B"]}


@pytest.mark.parametrize("task,row,words,answer", [
    ("boolq", {"question": "is it", "passage": "P", "answer": True}, "true/false", "true"),
    ("piqa", {"goal": "G", "sol1": "a", "sol2": "b", "label": 0}, "solution1/solution2", "solution1"),
    ("social_iqa", {"context": "C", "question": "Q", "answerA": "a", "answerB": "b", "answerC": "c",
                    "label": "2"}, "answer1/answer2/answer3", "answer2"),
    ("hellaswag", {"activity_label": "A", "ctx_a": "x.", "ctx_b": "he", "ctx": "x. he",
                   "endings": ["e1", "e2", "e3", "e4"], "label": "3"}, "ending1/ending2/ending3/ending4", "ending4"),
    ("winogrande", {"sentence": "Sam beat Max so _ won.", "option1": "Sam", "option2": "Max", "answer": "2"},
     "option1/option2", "option2"),
])
def test_commonsense170k_rows(task, row, words, answer):
    out = prepare.commonsense_row(task, TASKS[task].to_example(row))
    assert out["instruction"].endswith(f"Answer format: {words}")
    assert out["output"] == f"the correct answer is {answer}" and out["answer"] == answer and out["input"] == ""
    if task == "winogrande":  # one line, as LLM-Adapters writes it
        assert out["instruction"].endswith("Sam beat Max so _ won.\n\nOption1: Sam Option2: Max Answer format: option1/option2")
    if task == "boolq":
        assert "question: is it?" in out["instruction"] and "Answer1" not in out["instruction"]


def test_alpaca_rows_train_on_the_response_and_its_end_token(tokenizer):
    from lora_tsd.data import prompts

    row = {"instruction": "Name a colour.", "input": "", "output": "red"}
    enc = encoding.encode_example(tokenizer, row, 256)
    prompt = prompts.alpaca("Name a colour.")
    n_ctx = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert prompt.startswith("Below is an instruction") and prompt.endswith("### Response:\n")
    assert enc["labels"][:n_ctx] == [-100] * n_ctx
    assert tokenizer.decode(enc["input_ids"][n_ctx:]) == "red</s>" and enc["labels"][-1] == tokenizer.eos_token_id
    with_input = prompts.alpaca("Translate.", "bonjour")
    assert "### Input:\nbonjour" in with_input


def _task_dir(path, rows):
    path.mkdir(parents=True)
    (path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_commonsense_train_set_renders_every_task_train_split(tmp_path):
    from lora_tsd.data import prompts

    arc = {"question": "Q", "choices": {"text": ["w", "x"], "label": ["A", "B"]}, "answerKey": "B"}
    piqa = {"goal": "G", "sol1": "a", "sol2": "b", "label": 0}
    dirs = {t: _task_dir(tmp_path / t, []) for t in TASKS if TASKS[t].family == "commonsense"}
    dirs["arc_easy"] = _task_dir(tmp_path / "arc", [arc, arc])
    dirs["piqa"] = _task_dir(tmp_path / "pq", [piqa])
    manifest = prepare.build_train_set("commonsense170k", "embedded", tmp_path / "out", dirs)
    rows = prepare.read_jsonl(tmp_path / "out" / "train.jsonl")
    assert manifest["n_train"] == 3 and [r["task"] for r in rows] == ["arc_easy", "arc_easy", "piqa"]
    assert rows[0]["output"] == "the correct answer is answer2" and rows[2]["answer"] == "solution1"
    assert set(rows[0]) >= {"instruction", "input", "output", "answer", "prompt", "response"}
    # trained in LLM-Adapters' finetune.py template; the response is the output
    assert rows[0]["prompt"] == prompts.llm_adapters_train(rows[0]["instruction"])
    assert rows[0]["response"] == rows[0]["output"] and "llm_adapters prompt template" in manifest["how"]


def test_train_on_inputs_puts_the_loss_on_every_token(tokenizer):
    row = {"prompt": "Question: which?\nAnswer:", "response": " red"}
    masked = encoding.encode_example(tokenizer, row, 256)
    every = encoding.encode_example(tokenizer, row, 256, train_on_inputs=True)
    assert masked["input_ids"] == every["input_ids"] and every["labels"] == every["input_ids"]
    assert masked["labels"][0] == -100 and masked["labels"][-1] == every["labels"][-1]


@pytest.mark.parametrize("task,row,expected", [
    ("sst2", {"sentence": "fine film", "label": 1}, {"text": "fine film", "text_pair": None, "label": 1}),
    ("rte", {"sentence1": "a", "sentence2": "b", "label": 0}, {"text": "a", "text_pair": "b", "label": 0}),
    ("stsb", {"sentence1": "a", "sentence2": "b", "label": 3.2}, {"text": "a", "text_pair": "b", "label": 3.2}),
    ("qnli", {"question": "q", "sentence": "s", "label": 1}, {"text": "q", "text_pair": "s", "label": 1}),
])
def test_glue_normalisers(task, row, expected):
    assert TASKS[task].to_example(row) == expected


@pytest.mark.parametrize("name,source,override,origin", [
    ("commonsense170k", "embedded", None, "tasks"),
    ("commonsense170k", "embedded", "mine.json", "hub"),  # train_data is read with embedded data too
    ("alpaca", "embedded", "yahma/alpaca-cleaned", "hub"),
    ("commonsense170k", "hub", None, "tasks"),  # no default hub id: the 8 hub train splits, rendered
    ("commonsense170k", "hub", "resources/commonsense_170k.json", "hub"),
    ("alpaca", "embedded", None, "packaged"),
    ("alpaca", "hub", None, "hub"),  # yahma/alpaca-cleaned
    ("sst2", "embedded", None, "tasks"),
    ("mnli", "hub", "ignored", "tasks"),  # GLUE always trains on its own task's train split
])
def test_train_set_origin(name, source, override, origin):
    assert prepare.train_set_origin(name, source, override) == origin


def test_validation_rows_are_held_out_by_content_disjoint_and_fixed():
    rows = _examples(300)
    rest, val = prepare.hold_out(rows, 60, "salt")
    assert len(val) == 60 and len(rest) == 240
    assert not {e["query"] for e in rest} & {e["query"] for e in val}
    assert [r for r in rows if r in val] == val  # original order kept on each side
    _, again = prepare.hold_out(list(reversed(rows)), 60, "salt")
    assert sorted(e["query"] for e in again) == sorted(e["query"] for e in val)
    # its own salt: not simply the rows the test carve would pick next
    assert {e["query"] for e in prepare.hold_out(rows, 60, "other")[1]} != {e["query"] for e in val}


def test_prepare_carves_validation_from_the_train_side_or_half_the_held_out_rows(tmp_path):
    manifest = prepare.prepare("ifeval", "embedded", {"test_fraction": 0.4, "salt": "s"}, tmp_path / "if",
                               val_rows=60)
    assert (manifest["n_train"], manifest["n_val"], manifest["n_test"]) == (0, 36, 36)  # 72 prompts, half
    plain = prepare.prepare("ifeval", "embedded", {"test_fraction": 0.4, "salt": "s"}, tmp_path / "plain")
    assert "n_val" not in plain and not (tmp_path / "plain" / "val.jsonl").exists()
    val = prepare.read_jsonl(tmp_path / "if" / "val.jsonl")
    test = prepare.read_jsonl(tmp_path / "if" / "test.jsonl")
    assert sorted(map(json.dumps, val + test)) == sorted(map(json.dumps, prepare.read_jsonl(tmp_path / "plain" / "test.jsonl")))


def test_a_commonsense170k_file_loses_the_rows_that_render_validation_rows(tmp_path):
    arc = [{"question": f"Q{i}", "choices": {"text": ["w", "x"], "label": ["A", "B"]}, "answerKey": "B"}
           for i in range(3)]
    folder = _task_dir(tmp_path / "arc", arc[1:])
    (folder / "val.jsonl").write_text(json.dumps(arc[0]) + "\n")
    rendered = [prepare.commonsense_row("arc_easy", doc) for doc in arc]
    # the hub file's instruction with its own line breaks and spaces: matched on words
    rendered[0]["instruction"] = rendered[0]["instruction"].replace(" ", "  ")
    source = tmp_path / "commonsense_170k.json"
    source.write_text(json.dumps(rendered + [{"instruction": "other", "input": "", "output": "o"}]))
    manifest = prepare.build_train_set("commonsense170k", "hub", tmp_path / "out", {"arc_easy": folder}, str(source))
    rows = prepare.read_jsonl(tmp_path / "out" / "train.jsonl")
    assert manifest["n_train"] == 3 and "1 rows dropped that render a validation row of arc_easy" in manifest["how"]
    assert [r["instruction"] for r in rows] == [rendered[1]["instruction"], rendered[2]["instruction"], "other"]
