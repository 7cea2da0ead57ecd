"""Baselines against their definitions on a tiny random Llama: they train, their inits keep
the invariants they promise, parameter counts match, exports load in stock peft."""
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from lora_tsd.methods import dash, export, registry
from lora_tsd.tiny import make_llama
from lora_tsd.training import cell, loop

TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]
BASELINES = ["lora", "rslora", "dora", "pissa", "olora", "milora", "full", "vera"]


def _setup(method, cfg, tokenizer, examples, rank=4, cache=None):
    torch.manual_seed(0)
    model = registry.attach(method, make_llama(vocab_size=1000), rank, cfg, TARGETS)
    ctx = cell.make_context(tokenizer, examples, cfg, {}, 0, torch.device("cpu"), None, cache)
    registry.METHODS[method].hooks.setup(model, ctx)
    return model, ctx


def _ids(tokenizer):
    return tokenizer(["Question: the sky is green. Which colour?\nAnswer: green"], return_tensors="pt")["input_ids"]


def _logits(model, ids):
    with torch.no_grad():
        return model.eval()(ids).logits


def _linears():
    return [(n, m) for n, m in make_llama(vocab_size=1000).named_modules()
            if isinstance(m, torch.nn.Linear) and n.split(".")[-1] in TARGETS]


@pytest.mark.parametrize("method", BASELINES)
def test_baseline_trains(method, train_cfg, tokenizer, examples):
    # Full fine-tuning takes smaller steps; VeRA (only scaling vectors train) much larger ones.
    cfg = {**train_cfg, "lr": {"full": 1e-3, "vera": 1e-1}.get(method, train_cfg["lr"])}
    model, ctx = _setup(method, cfg, tokenizer, examples)
    log = loop.fit(model, tokenizer, examples, cfg, 0, hooks=registry.METHODS[method].hooks, ctx=ctx)
    first, last = sum(log["losses"][:5]) / 5, sum(log["losses"][-5:]) / 5
    assert last < 0.7 * first, (first, last)


@pytest.mark.parametrize("method", ["pissa", "olora", "milora", "rslora", "dora"])
def test_init_leaves_the_output_unchanged(method, train_cfg, tokenizer, examples):
    ids = _ids(tokenizer)
    base = _logits(make_llama(vocab_size=1000), ids)
    model, _ = _setup(method, train_cfg, tokenizer, examples)
    torch.testing.assert_close(_logits(model, ids), base, rtol=1e-4, atol=1e-4)


def test_milora_takes_the_minor_and_pissa_the_principal_components(train_cfg, tokenizer, examples):
    for method, pick in (("milora", lambda S, r: slice(len(S) - r, len(S))), ("pissa", lambda S, r: slice(0, r))):
        model, ctx = _setup(method, train_cfg, tokenizer, examples)
        for name, layer in dash.lora_layers(model):
            W = export.original_weight(layer)
            U, S, Vh = torch.linalg.svd(W.double(), full_matrices=False)
            sl = pick(S, 4)
            delta = layer.scaling["default"] * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
            torch.testing.assert_close(delta.double(), (U[:, sl] * S[sl]) @ Vh[sl], rtol=1e-3, atol=1e-4)


def test_dora_magnitude_equals_weight_norms_at_init(train_cfg, tokenizer, examples):
    model, _ = _setup("dora", train_cfg, tokenizer, examples)
    for _, layer in dash.lora_layers(model):
        W = layer.get_base_layer().weight
        mag = layer.lora_magnitude_vector["default"].weight
        torch.testing.assert_close(mag, torch.linalg.norm(W, dim=1))  # per output unit


def test_trainable_parameter_counts(train_cfg, tokenizer, examples):
    r = 4
    lora = sum(r * (m.in_features + m.out_features) for _, m in _linears())
    expected = {"lora": lora, "rslora": lora, "pissa": lora, "olora": lora, "milora": lora,
                "dora": lora + sum(m.out_features for _, m in _linears()),
                "full": sum(p.numel() for p in make_llama(vocab_size=1000).parameters())}
    vera_shared = max(m.in_features for _, m in _linears()), max(m.out_features for _, m in _linears())
    expected["vera"] = sum(r + m.out_features for _, m in _linears())  # lambda_d (r) + lambda_b (out)
    assert vera_shared == (128, 128)
    for method, count in expected.items():
        model, _ = _setup(method, train_cfg, tokenizer, examples)
        assert registry.trainable_parameters(model) == count, method


def test_rslora_scaling_is_alpha_over_sqrt_r(train_cfg, tokenizer, examples):
    model, _ = _setup("rslora", train_cfg, tokenizer, examples, rank=4)
    layer = next(l for _, l in dash.lora_layers(model))
    assert layer.scaling["default"] == pytest.approx(train_cfg["lora_alpha_ratio"] * 4 / 2)


@pytest.mark.parametrize("method", ["rslora", "dora", "pissa", "olora", "milora", "full", "vera"])
def test_saved_adapter_loads_in_stock_peft_with_the_same_logits(method, train_cfg, tokenizer, examples, tmp_path):
    cfg = {**train_cfg, "steps": 8, "lr": 1e-3 if method == "full" else train_cfg["lr"]}
    model, ctx = _setup(method, cfg, tokenizer, examples)
    loop.fit(model, tokenizer, examples, cfg, 0, hooks=registry.METHODS[method].hooks, ctx=ctx)
    ids = _ids(tokenizer)
    trained = _logits(model, ids)
    assert not torch.allclose(trained, _logits(make_llama(vocab_size=1000), ids), atol=1e-3)
    if registry.METHODS[method].hooks.exports_via_factors:
        export.export_adapter(model, tmp_path)
    else:
        model.save_pretrained(tmp_path)
    if method == "full":
        loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    else:
        loaded = PeftModel.from_pretrained(make_llama(vocab_size=1000), str(tmp_path))
    torch.testing.assert_close(_logits(loaded, ids), trained, rtol=1e-4, atol=1e-4)


def test_eva_stage_output_initialises_a_from_input_directions(train_cfg, tokenizer, examples, tmp_path):
    import json

    from lora_tsd.methods import eva
    from lora_tsd.pipeline import assets

    assets.build_model("tiny-llama", tmp_path / "model", None)
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "train.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    eva.eva_init(str(tmp_path / "model"), "commonsense170k", tmp_path / "task", 4, train_cfg, tmp_path / "eva.pt",
                 n_batches=4)

    torch.manual_seed(0)
    model = registry.attach("eva", make_llama(vocab_size=1000), 4, train_cfg, TARGETS)
    ctx = cell.make_context(tokenizer, examples, train_cfg, {}, 0, torch.device("cpu"), None, None,
                            stage_input=str(tmp_path / "eva.pt"))
    registry.METHODS["eva"].hooks.setup(model, ctx)
    saved = torch.load(tmp_path / "eva.pt", weights_only=True)
    assert len(saved["state"]) == 2 * len(TARGETS)
    assert saved["stage_s"] > 0 and ctx.timings["init_stage_s"] == saved["stage_s"]  # counted in the cell's train time
    assert ctx.timings["init_s"] > saved["stage_s"] and saved["rows"] == 16 and saved["batches"] == 4
    for name, layer in dash.lora_layers(model):
        A = layer.lora_A["default"].weight
        torch.testing.assert_close(A @ A.T, torch.eye(4), rtol=1e-4, atol=1e-4)  # orthonormal input directions
        assert (layer.lora_B["default"].weight == 0).all()
    ids = _ids(tokenizer)
    torch.testing.assert_close(_logits(model, ids), _logits(make_llama(vocab_size=1000), ids))
    log = loop.fit(model, tokenizer, examples, train_cfg, 0, hooks=registry.METHODS["eva"].hooks, ctx=ctx)
    assert sum(log["losses"][-5:]) < 0.7 * sum(log["losses"][:5])
