"""LoRA-Dash's fused dash term against its definition: the layer as two low-rank paths,
    y = W x + scaling B A drop(x) + U_S diag(d) V_S^T drop(x)
(one dropout mask), as the official layer computes it. The fused pair must give the same
losses, gradients (to A, B and d only) and merged weights, with dropout, micro-batches and a
resume that crosses the switch."""
import pytest
import torch
from peft.tuners.lora.layer import LoraVariant

from lora_tsd.methods import dash, export, registry
from lora_tsd.training import loop
from test_methods import TSD_CFG, _ids, _logits, _setup


class TwoPaths(LoraVariant):
    """The definition, term by term: LoRA's path, then the dash's beside it."""

    @staticmethod
    def init(module, adapter_name, **kwargs):
        pass

    @staticmethod
    def forward(module, active_adapter, x, result, **kwargs):
        A, B = module.lora_A[active_adapter], module.lora_B[active_adapter]
        dx = module.lora_dropout[active_adapter](x)
        result = result + B(A(dx)) * module.scaling[active_adapter]
        state = module.lora_dash[active_adapter]
        if state.on:
            result = result + ((dx @ state.V_S) * state.d) @ state.U_S.T
        return result

    merge_safe = staticmethod(dash.DashVariant.merge_safe)
    merge_unsafe = staticmethod(dash.DashVariant.merge_unsafe)
    unmerge = staticmethod(dash.DashVariant.unmerge)


def _two_paths(model):
    for _, layer in dash.lora_layers(model):
        layer.lora_variant["default"] = TwoPaths()
    return model


def _switched(train_cfg, tokenizer, examples, d_scale=0.3):
    """A switched LoRA-Dash model with non-zero A, B and d (so every gradient path carries)."""
    model, ctx = _setup("lora_dash", train_cfg, tokenizer, examples)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, layer in dash.lora_layers(model):
            layer.lora_B["default"].weight.copy_(0.05 * torch.randn(layer.lora_B["default"].weight.shape, generator=g))
    dash.switch(model, ctx.svd_of, export.effective_factors)
    with torch.no_grad():
        for _, layer in dash.lora_layers(model):
            d = layer.lora_dash["default"].d
            d.copy_(d_scale * torch.randn(d.shape, generator=g))
    return model


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


# float64 shows the two forms are the same function (rounding ~1e-15); float32, that the
# rounding stays at its level (max difference within 2e-5 of each tensor's largest entry).
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_fused_forward_and_gradients_equal_the_two_paths(dtype, tol, train_cfg, tokenizer, examples):
    fused = _switched(train_cfg, tokenizer, examples).to(dtype)
    ref = _two_paths(_switched(train_cfg, tokenizer, examples)).to(dtype)
    ids = _ids(tokenizer)
    out = {}
    for name, model in (("fused", fused), ("ref", ref)):
        model.train()
        torch.manual_seed(7)  # the same dropout masks in both
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        out[name] = (loss.detach(), _grads(model))
    (loss_f, grads_f), (loss_r, grads_r) = out["fused"], out["ref"]
    assert abs(loss_f.item() - loss_r.item()) <= tol * abs(loss_r.item())
    assert grads_f.keys() == grads_r.keys()
    assert sum("lora_dash" in n for n in grads_f) == 10  # d is trained in every adapted matrix
    for n in grads_r:
        scale = grads_r[n].abs().max()
        assert scale > 0, n  # every path carries a gradient
        assert (grads_f[n] - grads_r[n]).abs().max() <= tol * scale, n
    for _, layer in dash.lora_layers(fused):  # the directions stay frozen
        state = layer.lora_dash["default"]
        assert state.U_S.grad is None and state.V_S.grad is None


def test_fused_eval_output_and_merged_weights_equal_the_two_paths(train_cfg, tokenizer, examples):
    fused = _switched(train_cfg, tokenizer, examples)
    ref = _two_paths(_switched(train_cfg, tokenizer, examples))
    ids = _ids(tokenizer)
    torch.testing.assert_close(_logits(fused, ids), _logits(ref, ids), rtol=1e-5, atol=1e-5)
    # the dash moves the output: a test of the fused term, not of LoRA's half alone
    plain = _switched(train_cfg, tokenizer, examples, d_scale=0.0)
    assert (_logits(fused, ids) - _logits(plain, ids)).abs().max() > 1e-3
    merged_f, merged_r = fused.merge_and_unload(), ref.merge_and_unload()
    for (n, a), (_, b) in zip(merged_f.named_parameters(), merged_r.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=n)


@pytest.mark.parametrize("micro", [None, 2])
def test_fused_training_follows_the_two_paths_curve(micro, train_cfg, tokenizer, examples):
    cfg = {**train_cfg, "steps": 12, "micro_batch_size": micro}  # dropout 0.1 from train_cfg
    tsd_cfg = {**TSD_CFG, "dash_t": 4}
    hooks = registry.METHODS["lora_dash"].hooks
    logs, models = {}, {}
    for name in ("fused", "ref"):
        model, ctx = _setup("lora_dash", cfg, tokenizer, examples, tsd_cfg=tsd_cfg)
        if name == "ref":
            _two_paths(model)
        torch.manual_seed(3)
        logs[name] = loop.fit(model, tokenizer, examples, cfg, 0, hooks=hooks, ctx=ctx)
        models[name] = model
    assert ctx.timings["switch_step"] == 4
    assert logs["fused"]["losses"][:4] == logs["ref"]["losses"][:4]  # before the switch: identical
    assert logs["fused"]["losses"] == pytest.approx(logs["ref"]["losses"], rel=1e-5, abs=1e-6)
    for (_, a), (_, b) in zip(dash.lora_layers(models["fused"]), dash.lora_layers(models["ref"])):
        da, db = a.lora_dash["default"].d, b.lora_dash["default"].d
        assert da.abs().max() > 0
        torch.testing.assert_close(da, db, rtol=1e-4, atol=1e-6)


def test_fused_resume_across_the_switch_follows_the_two_paths_curve(train_cfg, tokenizer, examples, tmp_path):
    cfg = {**train_cfg, "steps": 12, "checkpoint_every": 4}
    tsd_cfg = {**TSD_CFG, "dash_t": 6}
    hooks = registry.METHODS["lora_dash"].hooks
    ref, ctx = _setup("lora_dash", cfg, tokenizer, examples, tsd_cfg=tsd_cfg)
    full = loop.fit(_two_paths(ref), tokenizer, examples, cfg, 0, hooks=hooks, ctx=ctx)

    ckpt = tmp_path / "state.pt"
    first, ctx1 = _setup("lora_dash", cfg, tokenizer, examples, tsd_cfg=tsd_cfg)
    loop.fit(first, tokenizer, examples, cfg, 0, ckpt=ckpt, stop_after=8, hooks=hooks, ctx=ctx1)
    second, ctx2 = _setup("lora_dash", cfg, tokenizer, examples, tsd_cfg=tsd_cfg)
    resumed = loop.fit(second, tokenizer, examples, cfg, 0, ckpt=ckpt, hooks=hooks, ctx=ctx2)
    assert resumed["resumed_from_step"] == 8 and dash.is_active(second)
    assert resumed["losses"] == pytest.approx(full["losses"], rel=1e-5, abs=1e-6)


def test_dash_refuses_a_lora_bias(train_cfg):
    from lora_tsd.tiny import make_llama
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(make_llama(vocab_size=1000), LoraConfig(r=4, target_modules=["q_proj"], lora_bias=True))
    with pytest.raises(NotImplementedError, match="lora_bias"):
        dash.attach(model, 4)
