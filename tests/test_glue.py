"""GLUE path on a tiny random-init BERT: classification and regression heads, adapters with a
trainable head, export, and evaluate-backed scoring."""
import json

import pytest
import torch

from lora_tsd import models
from lora_tsd.evaluation import protocols, scoring
from lora_tsd.methods import export, registry
from lora_tsd.methods.export import lora_layers
from lora_tsd.pipeline import assets
from lora_tsd.training import cell, loop

WORDS = ["wonderful", "moving", "dull", "terrible"]
# A learnable rule: positive words -> 1, negative words -> 0.
ROWS = [{"text": f"the movie was {WORDS[i % 4]}", "text_pair": None, "label": int(i % 4 < 2)} for i in range(32)]
PAIRS = [{"text": f"the plot was {WORDS[i % 4]}", "text_pair": f"the acting was {WORDS[(i + 1) % 4]}",
          "label": float(i % 4) / 3} for i in range(16)]
CFG = {"steps": 30, "batch_size": 8, "lr": 1e-2, "warmup_steps": 2, "weight_decay": 0.0, "max_length": 32,
       "lora_alpha_ratio": 2, "lora_dropout": 0.0, "checkpoint_every": 100}
TSD = {"dash_t": 10, "dash_s": 2, "svd_dtype": "float32", "init_estimate": "warmup", "init_steps": 4,
       "init_scale": "singular", "init_residualise": True}


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-bert")
    assets.build_model("tiny-bert", out, None)
    return out


def _setup(method, bert_dir, train_set="sst2", rows=ROWS, rank=4):
    base, tokenizer, extra = models.load_for_training(str(bert_dir), train_set, seed=0)
    model = registry.attach(method, base, rank, CFG, models.target_modules(base), **extra)
    ctx = cell.make_context(tokenizer, rows, CFG, dict(TSD), 0, torch.device("cpu"), None, None, fmt="classification")
    registry.METHODS[method].hooks.setup(model, ctx)
    return model, tokenizer, ctx


def _logits(model, tokenizer, rows):
    from lora_tsd.data import encoding

    enc = [encoding.encode_classification(tokenizer, r, 32) for r in rows]
    batch = encoding.collate_classification(enc, tokenizer.pad_token_id)
    batch.pop("labels")
    with torch.no_grad():
        return model(**batch).logits


def test_classifier_head_trains_beside_the_adapter_and_base_stays_frozen(bert_dir):
    model, tokenizer, ctx = _setup("lora", bert_dir)
    head_before = {n: p.detach().clone() for n, p in model.named_parameters() if "classifier" in n and p.requires_grad}
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    log = loop.fit(model, tokenizer, ROWS, CFG, 0, fmt="classification")
    assert head_before and all("modules_to_save" in n for n in head_before)
    assert log["losses"][-1] < 0.5 * log["losses"][0]
    params = dict(model.named_parameters())
    assert all(not torch.equal(params[n], v) for n, v in head_before.items())
    assert all(torch.equal(params[n], v) for n, v in frozen_before.items())
    preds = _logits(model, tokenizer, ROWS).argmax(-1).tolist()
    assert preds == [r["label"] for r in ROWS]


def test_regression_head_uses_mse_on_float_labels(bert_dir):
    model, tokenizer, _ = _setup("lora", bert_dir, train_set="stsb", rows=PAIRS)
    assert model.config.problem_type == "regression" and model.config.num_labels == 1
    from lora_tsd.data import encoding

    batch = encoding.collate_classification([encoding.encode_classification(tokenizer, r, 32) for r in PAIRS[:4]],
                                            tokenizer.pad_token_id)
    assert batch["labels"].dtype == torch.float32
    with torch.no_grad():
        out = model(**batch)
    assert out.loss.item() == pytest.approx(((out.logits[:, 0] - batch["labels"]) ** 2).mean().item(), rel=1e-5)


@pytest.mark.parametrize("method", ["lora", "lora_dash", "lora_tsd"])
def test_exported_adapter_with_head_loads_in_stock_peft_with_the_same_logits(bert_dir, method, tmp_path):
    from peft import PeftModel

    model, tokenizer, ctx = _setup(method, bert_dir)
    loop.fit(model, tokenizer, ROWS, CFG, 0, hooks=registry.METHODS[method].hooks, ctx=ctx, fmt="classification")
    if registry.METHODS[method].hooks.exports_via_factors:
        export.export_adapter(model, tmp_path)
    else:
        model.save_pretrained(tmp_path)
    expected = _logits(model, tokenizer, ROWS)
    fresh, _ = models.load_classifier(str(bert_dir), 2, seed=123)  # a different random head
    loaded = PeftModel.from_pretrained(fresh, str(tmp_path)).merge_and_unload().eval()
    assert torch.allclose(_logits(loaded, tokenizer, ROWS), expected, atol=1e-4)
    if method != "lora":
        assert next(lora_layers(model), None) is not None and json.loads((tmp_path / "adapter_config.json").read_text())["r"] > 4


def test_glue_scoring_matches_direct_predictions(bert_dir, tmp_path):
    model, tokenizer, _ = _setup("lora", bert_dir)
    loop.fit(model, tokenizer, ROWS, {**CFG, "steps": 3}, 0, fmt="classification")
    merged = model.merge_and_unload().eval()
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:20]))
    cfg = {**protocols.DEFAULT_EVAL, "limit": None, "batch_size": 6}
    res = scoring.score_glue(merged, tokenizer, "mrpc", test, cfg)["glue"]
    preds = _logits(merged, tokenizer, ROWS[:20]).argmax(-1).tolist()
    gold = [r["label"] for r in ROWS[:20]]
    tp = sum(p == g == 1 for p, g in zip(preds, gold))
    acc = sum(p == g for p, g in zip(preds, gold)) / 20
    f1 = 2 * tp / (sum(preds) + sum(gold)) if tp else 0.0
    assert res["n_test"] == 20
    assert res["metrics"]["accuracy"] == pytest.approx(acc) and res["metrics"]["f1"] == pytest.approx(f1)
    assert res["items"]["prediction"] == preds and res["items"]["label"] == gold
    # The tables' per-item statistics give evaluate's numbers back on the full set.
    from lora_tsd.aggregate import items, stats

    for metric, scored in items._protocol_items("glue", res).items():
        assert stats.statistic(scored.kind, scored.a, scored.b)[0] == pytest.approx(100 * res["metrics"][metric])


def test_mnli_scores_matched_and_mismatched_separately(bert_dir, tmp_path):
    base, tokenizer, _ = models.load_for_training(str(bert_dir), "mnli", seed=0)
    rows = [{**r, "label": r["label"] + (i % 2), "subset": ["matched", "mismatched"][i % 2]}
            for i, r in enumerate(ROWS[:12])]
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = scoring.score_glue(base.eval(), tokenizer, "mnli", test,
                             {**protocols.DEFAULT_EVAL, "limit": None, "batch_size": 4})["glue"]
    preds = _logits(base.eval(), tokenizer, rows).argmax(-1).tolist()
    for subset in ("matched", "mismatched"):
        idx = [i for i, r in enumerate(rows) if r["subset"] == subset]
        expected = sum(preds[i] == rows[i]["label"] for i in idx) / len(idx)
        assert res["metrics"][f"accuracy_{subset}"] == pytest.approx(expected)


@pytest.mark.parametrize("method", ["lora_init", "lora_tsd"])
def test_lora_init_warmup_leaves_the_classifier_head_as_it_found_it(method, bert_dir):
    base, tokenizer, extra = models.load_for_training(str(bert_dir), "sst2", seed=0)
    model = registry.attach(method, base, 4, CFG, models.target_modules(base), **extra)
    head = {n: p.detach().clone() for n, p in model.named_parameters()
            if p.requires_grad and "lora_" not in n}
    assert head and all("modules_to_save" in n for n in head)
    ctx = cell.make_context(tokenizer, ROWS, CFG, dict(TSD), 0, torch.device("cpu"), None, None, fmt="classification")
    registry.METHODS[method].hooks.setup(model, ctx)
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in head.items())
    assert ctx.timings["init_s"] > 0 and ctx.timings["init_steps"] == TSD["init_steps"]
