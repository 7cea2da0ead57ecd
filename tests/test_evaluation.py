import json

import pytest
import torch

from lora_tsd.evaluation import protocols, scoring
from lora_tsd.tiny import make_llama


def _loglik(model, tokenizer, context, continuation):
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    n_ctx = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    ids = torch.tensor([whole])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
    return sum(logp[i - 1, whole[i]].item() for i in range(n_ctx, len(whole)))


LOGLIK = {**protocols.DEFAULT_EVAL, "protocols": ["loglik"], "limit": None, "batch_size": 4}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _arc_docs(examples):
    """The conftest examples as ARC rows (the schema lm-eval's arc_easy reads)."""
    return [{"id": str(i), "question": ex["query"].removeprefix("Question: ").removesuffix("\nAnswer:"),
             "choices": {"text": ex["choices"], "label": list("ABCD")}, "answerKey": "ABCD"[ex["gold"]]}
            for i, ex in enumerate(examples)]


def test_lm_eval_accuracy_equals_a_direct_log_likelihood_argmax(tokenizer, examples, tmp_path):
    test_file = _write(tmp_path / "test.jsonl", _arc_docs(examples))
    model = make_llama(vocab_size=1000, seed=7)
    res = scoring.score_lm(model, tokenizer, "arc_easy", test_file, LOGLIK, "embedded")["loglik"]
    expected = []
    for ex in examples:
        scores = [_loglik(model, tokenizer, ex["query"], " " + c) for c in ex["choices"]]
        expected.append(int(max(range(len(scores)), key=scores.__getitem__) == ex["gold"]))
    assert res["n_test"] == len(examples)
    assert res["metrics"]["acc"] == pytest.approx(sum(expected) / len(expected))
    assert 0 <= res["metrics"]["acc_norm"] <= 1
    # Per-item scores (what the CIs and paired tests resample): each row's own correctness, in doc order.
    items = res["items"]
    assert items["doc_id"] == list(range(len(examples))) and items["acc"] == expected
    assert sum(items["acc_norm"]) / len(examples) == pytest.approx(res["metrics"]["acc_norm"])
    assert len(set(items["doc_hash"])) == len(examples)


def test_limit_scores_only_the_first_examples(tokenizer, examples, tmp_path):
    test_file = _write(tmp_path / "test.jsonl", _arc_docs(examples))
    res = scoring.score_lm(make_llama(vocab_size=1000), tokenizer, "arc_easy", test_file,
                           {**LOGLIK, "limit": 5}, "embedded")
    assert list(res) == ["loglik"] and res["loglik"]["n_test"] == 5


ARC = [{"id": str(i), "question": f"what is item {i}?", "choices": {"text": ["w", "x", "y", "z"],
        "label": list("ABCD")}, "answerKey": "ABCD"[i % 4]} for i in range(6)]


class CannedLM:
    """An lm-eval LM that answers each prompt with a fixed text (tests the protocol's filters)."""

    def __new__(cls, replies):
        from lm_eval.api.model import LM

        class _Canned(LM):
            def generate_until(self, requests):
                return [replies[r.args[0]] for r in requests]

            def loglikelihood(self, requests):
                raise NotImplementedError

            def loglikelihood_rolling(self, requests):
                raise NotImplementedError

        return _Canned()


def test_generative_protocol_scores_the_first_answer_word(tmp_path):
    rows = protocols.generative_rows("arc_easy", ARC)
    assert rows[0]["prompt"].startswith("Below is an instruction") and "Answer4: z" in rows[0]["prompt"]
    assert [r["answer"] for r in rows] == ["answer1", "answer2", "answer3", "answer4", "answer1", "answer2"]
    texts = ["the correct answer is answer1", "answer2, not answer1", "Answer3",  # wrong case: no match
             "the answer is answer1 or answer4", "no idea", "the correct answer is answer2"]
    replies = {r["prompt"]: t for r, t in zip(rows, texts)}
    rendered = _write(tmp_path / "gen.jsonl", rows)
    spec = protocols.generative_yaml("arc_easy", rendered, protocols.DEFAULT_EVAL)
    res = scoring.lm_eval_run(CannedLM(replies), {"generative": spec}, None, tmp_path)
    # first answer words: answer1 (right), answer2 (right), none, answer1 (wrong), none, answer2 (right)
    assert res["generative"]["metrics"]["acc"] == pytest.approx(3 / 6)
    assert res["generative"]["n_test"] == 6
    assert res["generative"]["items"]["acc"] == [1, 1, 0, 0, 0, 1]  # exact_match renamed like the metric


@pytest.mark.parametrize("num_beams", [1, 2])
def test_batched_left_padded_generation_equals_one_at_a_time(tokenizer, num_beams):
    from lm_eval.api.instance import Instance

    model = make_llama(vocab_size=1000, seed=3)
    prompts = [r["prompt"] for r in protocols.generative_rows("arc_easy", ARC)]
    prompts[1] = prompts[1].replace("item 1", "a much longer item number one, with padding needed")
    kwargs = {"until": [], "do_sample": False, "num_beams": num_beams, "max_gen_toks": 8}

    def generate(batch_size):
        lm = scoring.hflm(model, tokenizer, batch_size)
        reqs = [Instance("generate_until", {}, (p, dict(kwargs)), i) for i, p in enumerate(prompts)]
        return lm.generate_until(reqs)

    batched, single = generate(6), generate(1)
    assert len(set(len(tokenizer(p)["input_ids"]) for p in prompts)) > 1  # padding really happens
    assert batched == single and any(batched)
