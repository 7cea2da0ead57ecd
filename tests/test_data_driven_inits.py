"""LoRA-GA, CorDA (both through peft) and LoRA-One against their definitions on a tiny random
Llama: each stage's state is recomputed densely in float64 from the same rows, the cell's
initial factors are checked against it, and each trained export reloads in stock peft."""
import json

import pytest
import torch
from peft import PeftModel

from lora_tsd.data import encoding
from lora_tsd.methods import export, lora_ga, lora_one, registry, stage
from lora_tsd.pipeline import assets
from lora_tsd.tiny import make_llama
from lora_tsd.training import cell, loop
from test_baselines import TARGETS, _ids, _logits

RANK = 4


@pytest.fixture(scope="module")
def built(tmp_path_factory, examples):
    """The tiny Llama as the workflow builds it, and a train set of the fixture's rows."""
    root = tmp_path_factory.mktemp("stage")
    assets.build_model("tiny-llama", root / "model", None)
    (root / "task").mkdir()
    (root / "task" / "train.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    return root


def _stage(method, built, cfg, seed=0):
    out = built / f"{method}_{seed}.pt"
    if method == "corda":
        from lora_tsd.methods import corda

        corda.corda_init(str(built / "model"), "commonsense170k", built / "task", RANK, cfg, out, rows=12)
    else:
        lora_ga.gradient_init(str(built / "model"), "commonsense170k", built / "task", cfg, seed, out)
    return out


def _cell(method, cfg, tokenizer, examples, stage_out):
    torch.manual_seed(0)
    model = registry.attach(method, make_llama(vocab_size=1000), RANK, cfg, TARGETS)
    ctx = cell.make_context(tokenizer, examples, cfg, {}, 0, torch.device("cpu"), None, None,
                            stage_input=str(stage_out))
    registry.METHODS[method].hooks.setup(model, ctx)
    return model, ctx


def _dense_gradients(tokenizer, examples, cfg, rows=lora_ga.GRADIENT_ROWS):
    """The mean over the first rows of each row's float64 gradient w.r.t. each target W."""
    model = make_llama(vocab_size=1000).double().train()
    encoded = encoding.encode(tokenizer, examples[:rows], cfg, "causal")
    for row in encoded:
        model(**encoding.collate([row], tokenizer.pad_token_id, "causal")).loss.backward()
    return {n: m.weight.grad / len(encoded) for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and n.split(".")[-1] in TARGETS}


def _gradient_cell(method, built, cfg, tokenizer, examples):
    """A cell initialised from its gradient stage, with the float64 gradients it should match."""
    model, ctx = _cell(method, cfg, tokenizer, examples, _stage(method, built, cfg))
    return model, ctx, _dense_gradients(tokenizer, examples, cfg)


def _delta(layer):
    """The adapter's whole change from the original W: scaling B A (less B0 A0 once residualised)."""
    B, A = export.effective_factors(layer)
    return (B @ A).double()


def test_gradient_stage_is_the_mean_full_gradient_over_the_cell_s_first_rows(built, train_cfg, tokenizer, examples):
    saved = stage.saved(_stage("lora_ga", built, train_cfg))
    dense = _dense_gradients(tokenizer, examples, train_cfg)
    assert saved["rows"] == 24 and saved["batches"] == 24 and saved["stage_s"] > 0  # 24 rows < 32, one at a time
    assert set(saved["grads"]) == set(dense)
    for name, grad in dense.items():
        torch.testing.assert_close(saved["grads"][name].double(), grad, rtol=1e-4, atol=1e-6)


def test_lora_ga_takes_the_gradient_s_singular_directions_and_keeps_the_output(built, train_cfg, tokenizer,
                                                                                examples):
    model, ctx, dense = _gradient_cell("lora_ga", built, train_cfg, tokenizer, examples)
    for name, layer in export.lora_layers(model):
        U, S, Vh = torch.linalg.svd(dense[stage.base_name(name)])
        A, B = layer.lora_A["default"].weight.double(), layer.lora_B["default"].weight.double()
        # peft's default direction ArB2r: A's rows span the top-r right singular vectors, B's
        # columns the next r left ones, B scaled by their singular values (and the stable scale).
        assert torch.linalg.matrix_norm(A @ Vh[:RANK].T @ Vh[:RANK] - A) < 1e-3 * torch.linalg.matrix_norm(A)
        U_next = U[:, RANK:2 * RANK]
        assert torch.linalg.matrix_norm(U_next @ U_next.T @ B - B) < 1e-3 * torch.linalg.matrix_norm(B)
        stable = B.shape[0] ** 0.25 / 16 ** 0.5
        torch.testing.assert_close(torch.linalg.svdvals(B), S[RANK:2 * RANK] * stable, rtol=1e-3, atol=1e-8)
        assert layer.lora_A["default"].weight.dtype == torch.float32 and B.requires_grad
    # Residualised: the model is unchanged at step 0 (to float32 rounding of W - scaling B0 A0).
    ids = _ids(tokenizer)
    torch.testing.assert_close(_logits(model, ids), _logits(make_llama(vocab_size=1000), ids), rtol=1e-4, atol=1e-4)
    # the stage's time and the cell's own set-up are the cell's init cost
    assert ctx.timings["init_stage_s"] == stage.saved(built / "lora_ga_0.pt")["stage_s"]
    assert ctx.timings["init_s"] == pytest.approx(ctx.timings["init_stage_s"] + ctx.timings["init_setup_s"])
    assert ctx.timings["init_setup_s"] > 0 and ctx.timings["init_rows"] == 24


def test_corda_takes_the_top_directions_of_w_times_the_input_covariance(built, train_cfg, tokenizer, examples):
    out = _stage("corda", built, train_cfg)
    model, ctx = _cell("corda", train_cfg, tokenizer, examples, out)
    # The covariance of each target's inputs over the stage's 12 rows, one row at a time, each
    # row's inputs divided by their largest value (peft's normalisation), in float64, damped.
    base = make_llama(vocab_size=1000).double().eval()
    cov, hooks = {}, []
    for name, m in base.named_modules():
        if isinstance(m, torch.nn.Linear) and name.split(".")[-1] in TARGETS:
            def hook(mod, args, _out, name=name):
                x = args[0].squeeze(0) / args[0].max().abs()
                cov[name] = cov.get(name, 0) + x.T @ x
            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        for row in encoding.encode(tokenizer, examples[:12], train_cfg, "causal"):
            base(input_ids=torch.tensor([row["input_ids"]]))
    W = {n: m.weight for n, m in base.named_modules() if n in cov}
    for name, layer in export.lora_layers(model):
        C = cov[stage.base_name(name)] / 12
        C = C + 0.01 * C.diag().mean() * torch.eye(len(C), dtype=C.dtype)  # CorDA's damping (its first, 1%)
        WC = W[stage.base_name(name)] @ C
        U, S, Vh = torch.linalg.svd(WC)
        top = U[:, :RANK] @ torch.diag(S[:RANK]) @ Vh[:RANK]
        # scaling B0 A0 C is WC's best rank-r approximation; the rest of W stays in the base weight
        B, A = layer.lora_B["default"].weight.double(), layer.lora_A["default"].weight.double()
        got = layer.scaling["default"] * B @ A @ C  # peft works in float32: agree to 1e-4 of the norm
        assert torch.linalg.matrix_norm(got - top) < 1e-4 * torch.linalg.matrix_norm(top)
    ids = _ids(tokenizer)  # residualised: unchanged at step 0 (to float32 rounding of W's large top part, as PiSSA)
    torch.testing.assert_close(_logits(model, ids), _logits(make_llama(vocab_size=1000), ids), rtol=1e-4, atol=1e-4)
    assert ctx.timings["init_rows"] == 12 and ctx.timings["init_s"] > 0


def test_lora_one_takes_the_one_step_gradient_s_top_directions_and_keeps_the_output(built, train_cfg, tokenizer,
                                                                                     examples):
    model, ctx, dense = _gradient_cell("lora_one", built, train_cfg, tokenizer, examples)
    for name, layer in export.lora_layers(model):
        U, S, Vh = torch.linalg.svd(-dense[stage.base_name(name)])
        m = U.shape[0]
        k2 = m ** 0.5 / (lora_one.GAMMA * max(1.0, float(S[0])))
        step = U[:, :RANK] @ torch.diag(S[:RANK]) @ Vh[:RANK] * k2 * layer.scaling["default"]
        B, A = layer.lora_B["default"].weight.double(), layer.lora_A["default"].weight.double()
        # the stage's gradient is float32: agree with the float64 step to 1e-4 of its norm
        assert torch.linalg.matrix_norm(layer.scaling["default"] * B @ A - step) < 1e-4 * torch.linalg.matrix_norm(step)
        # B0 and A0 share the singular values' square roots (a balanced split)
        torch.testing.assert_close(torch.linalg.svdvals(B), torch.linalg.svdvals(A), rtol=1e-4, atol=1e-8)
    # Residualised: the model is unchanged at step 0, and the export holds the change from W.
    ids = _ids(tokenizer)
    torch.testing.assert_close(_logits(model, ids), _logits(make_llama(vocab_size=1000), ids), rtol=1e-4, atol=1e-4)
    assert all(_delta(layer).abs().max() < 1e-6 for _, layer in export.lora_layers(model))
    assert ctx.timings["init_batches"] == 24


def test_spectral_factors_normalise_only_a_top_singular_value_above_one():
    torch.manual_seed(0)
    small = torch.randn(8, 6) * 1e-3
    B, A = lora_one.spectral_factors(small, 2, gamma=4.0, dtype=torch.float64)
    U, S, Vh = torch.linalg.svd(-small.double())
    torch.testing.assert_close(B @ A, U[:, :2] @ torch.diag(S[:2]) @ Vh[:2] * 8 ** 0.5 / 4.0)
    big = small * 1e6
    B, A = lora_one.spectral_factors(big, 2, gamma=4.0, dtype=torch.float64)
    assert torch.linalg.matrix_norm(B @ A, ord=2) == pytest.approx(8 ** 0.5 / 4.0)


@pytest.mark.parametrize("method", ["lora_ga", "corda", "lora_one"])
def test_trained_export_loads_in_stock_peft_with_the_same_logits(method, built, train_cfg, tokenizer, examples,
                                                                 tmp_path):
    cfg = {**train_cfg, "steps": 8}
    model, ctx = _cell(method, cfg, tokenizer, examples, _stage(method, built, cfg))
    log = loop.fit(model, tokenizer, examples, cfg, 0, hooks=registry.METHODS[method].hooks, ctx=ctx)
    assert log["losses"][-1] < log["losses"][0]
    ids = _ids(tokenizer)
    trained = _logits(model, ids)
    if registry.METHODS[method].hooks.exports_via_factors:
        export.export_adapter(model, tmp_path)
    else:
        model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(make_llama(vocab_size=1000), str(tmp_path))
    torch.testing.assert_close(_logits(loaded, ids), trained, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["lora_ga", "corda", "lora_one"])
def test_over_bf16_weights_the_factors_train_in_float32_and_the_output_holds(method, built, train_cfg, tokenizer,
                                                                             examples):
    """peft's inits write A and B in W's dtype; the cell keeps what trains in float32, and the
    residualised bf16 W reproduces the bf16 base's output to bf16 rounding."""
    torch.manual_seed(0)
    model = registry.attach(method, make_llama(vocab_size=1000).to(torch.bfloat16), RANK, train_cfg, TARGETS)
    ctx = cell.make_context(tokenizer, examples, train_cfg, {}, 0, torch.device("cpu"), None, None,
                            stage_input=str(_stage(method, built, train_cfg)))
    registry.METHODS[method].hooks.setup(model, ctx)
    for _, layer in export.lora_layers(model):
        for p in (layer.lora_A["default"].weight, layer.lora_B["default"].weight):
            assert p.dtype == torch.float32 and p.requires_grad
        assert layer.get_base_layer().weight.dtype == torch.bfloat16
    ids = _ids(tokenizer)
    base = _logits(make_llama(vocab_size=1000).to(torch.bfloat16), ids).float()
    assert (_logits(model, ids).float() - base).abs().max() < 0.05 * base.abs().max()


@pytest.mark.parametrize("method", ["lora_ga", "corda", "lora_one"])
def test_a_resumed_cell_rebuilds_its_init_and_continues_the_same_curve(method, built, train_cfg, tokenizer,
                                                                       examples, tmp_path):
    """A resumed cell reruns its init from the kept stage file (seeded as the cell seeds it), so
    the residualised W matches the checkpoint's A, B, B0, A0 and the losses continue exactly."""
    cfg = {**train_cfg, "steps": 12, "checkpoint_every": 4}
    out, hooks = _stage(method, built, cfg), registry.METHODS[method].hooks
    model, ctx = _cell(method, cfg, tokenizer, examples, out)
    full = loop.fit(model, tokenizer, examples, cfg, 0, hooks=hooks, ctx=ctx)
    ckpt = tmp_path / "state.pt"
    first, ctx1 = _cell(method, cfg, tokenizer, examples, out)
    loop.fit(first, tokenizer, examples, cfg, 0, ckpt=ckpt, stop_after=6, hooks=hooks, ctx=ctx1)
    second, ctx2 = _cell(method, cfg, tokenizer, examples, out)
    resumed = loop.fit(second, tokenizer, examples, cfg, 0, ckpt=ckpt, hooks=hooks, ctx=ctx2)
    assert resumed["resumed_from_step"] == 6
    assert resumed["losses"] == pytest.approx(full["losses"], rel=1e-5, abs=1e-6)
    for (_, a), (_, b) in zip(export.lora_layers(model), export.lora_layers(second)):
        torch.testing.assert_close(a.get_base_layer().weight, b.get_base_layer().weight)
