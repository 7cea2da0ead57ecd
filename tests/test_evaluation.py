import json

import pytest
import torch

from lora_tsd import evaluation
from lora_tsd.tiny import make_llama


def _loglik(model, tokenizer, context, continuation):
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    n_ctx = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    ids = torch.tensor([whole])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
    return sum(logp[i - 1, whole[i]].item() for i in range(n_ctx, len(whole)))


def test_lm_eval_accuracy_equals_a_direct_log_likelihood_argmax(tokenizer, examples, tmp_path):
    test_file = tmp_path / "test.jsonl"
    test_file.write_text("".join(json.dumps(e) + "\n" for e in examples))
    model = make_llama(vocab_size=1000, seed=7)
    res = evaluation.score(model, tokenizer, "toy", test_file, limit=None, batch_size=4)
    expected = []
    for ex in examples:
        scores = [_loglik(model, tokenizer, ex["query"], " " + c) for c in ex["choices"]]
        expected.append(int(max(range(len(scores)), key=scores.__getitem__) == ex["gold"]))
    assert res["n_test"] == len(examples)
    assert res["metrics"]["acc"] == pytest.approx(sum(expected) / len(expected))
    assert 0 <= res["metrics"]["acc_norm"] <= 1


def test_limit_scores_only_the_first_examples(tokenizer, examples, tmp_path):
    test_file = tmp_path / "test.jsonl"
    test_file.write_text("".join(json.dumps(e) + "\n" for e in examples))
    res = evaluation.score(make_llama(vocab_size=1000), tokenizer, "toy", test_file, limit=5, batch_size=4)
    assert res["n_test"] == 5
