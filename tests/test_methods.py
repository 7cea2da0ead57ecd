"""LoRA-Dash, LoRA-Init and LoRA-TSD against their definitions, on a tiny random Llama."""
import pytest
import torch
from peft import PeftModel

from lora_tsd.methods import dash, export, registry
from lora_tsd.methods.hooks import Context
from lora_tsd.tiny import make_llama
from lora_tsd.training import cell, checkpoint, loop

TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]
TSD_CFG = {"dash_t": 10, "dash_s": 4, "init_estimate": "warmup", "init_steps": 5,
           "init_scale": "singular", "init_residualise": True, "svd_dtype": "float32"}


def _model(method, cfg, rank=4, seed=0):
    torch.manual_seed(seed)
    return registry.attach(method, make_llama(vocab_size=1000), rank, cfg, TARGETS)


def _setup(method, cfg, tokenizer, examples, tsd_cfg=TSD_CFG, cache=None, rank=4):
    model = _model(method, cfg, rank)
    ctx = cell.make_context(tokenizer, examples, cfg, dict(tsd_cfg), 0, torch.device("cpu"), None, cache)
    registry.METHODS[method].hooks.setup(model, ctx)
    return model, ctx


def _train(method, cfg, tokenizer, examples, **kw):
    model, ctx = _setup(method, cfg, tokenizer, examples, **kw)
    log = loop.fit(model, tokenizer, examples, cfg, 0, hooks=registry.METHODS[method].hooks, ctx=ctx)
    return model.eval(), ctx, log


def _ids(tokenizer):
    return tokenizer(["Question: the sky is blue. Which colour?\nAnswer: blue"], return_tensors="pt")["input_ids"]


def _logits(model, ids):
    with torch.no_grad():
        return model.eval()(ids).logits


def test_dash_equals_lora_exactly_before_the_switch(train_cfg, tokenizer, examples):
    cfg = {**train_cfg, "steps": 10}
    never = {**TSD_CFG, "dash_t": 10}  # switches after the last step only
    _, _, lora_log = _train("lora", cfg, tokenizer, examples)
    _, ctx, dash_log = _train("lora_dash", cfg, tokenizer, examples, tsd_cfg=never)
    assert dash_log["losses"] == lora_log["losses"]
    assert ctx.timings["switch_step"] == 10


def test_dash_output_does_not_move_at_the_switch_and_moves_after(train_cfg, tokenizer, examples):
    cfg = {**train_cfg, "steps": 6}
    model, ctx = _setup("lora_dash", cfg, tokenizer, examples)
    loop.fit(model, tokenizer, examples, cfg, 0)  # pre-launch only (no hooks)
    ids = _logits(model, _ids(tokenizer))
    assert not dash.is_active(model)
    dash.switch(model, ctx.svd_of, export.effective_factors)
    assert dash.is_active(model)
    torch.testing.assert_close(_logits(model, _ids(tokenizer)), ids, rtol=0, atol=0)
    d_before = [l.lora_dash["default"].d.clone() for _, l in dash.lora_layers(model)]
    loop.fit(model, tokenizer, examples, {**cfg, "steps": 3}, 1)
    d_after = [l.lora_dash["default"].d for _, l in dash.lora_layers(model)]
    assert all((b == 0).all() for b in d_before) and any((a != 0).any() for a in d_after)


class _NoSync(torch.Tensor):
    """A flag tensor that fails if anything reads it on the host (a device-to-host sync)."""

    def __bool__(self):
        raise AssertionError("the forward read a tensor flag on the host")


def test_dash_forward_reads_no_tensor_flag_and_the_flag_survives_a_checkpoint(train_cfg, tokenizer, examples):
    cfg = {**train_cfg, "steps": 4}
    model, ctx = _setup("lora_dash", cfg, tokenizer, examples)
    dash.switch(model, ctx.svd_of, export.effective_factors)
    saved = checkpoint.adapter_state(model)
    for _, layer in dash.lora_layers(model):
        state = layer.lora_dash["default"]
        state.active = torch.ones((), dtype=torch.bool).as_subclass(_NoSync)
    log = loop.fit(model, tokenizer, examples, cfg, 0)  # forward and backward, dash term on
    assert len(log["losses"]) == 4
    fresh, _ = _setup("lora_dash", cfg, tokenizer, examples)
    assert not dash.is_active(fresh)
    checkpoint.load_adapter_state(fresh, saved)  # the flag comes back with the buffers
    assert dash.is_active(fresh) and all(l.lora_dash["default"].on for _, l in dash.lora_layers(fresh))


def test_dash_selects_the_top_change_rate_directions(train_cfg, tokenizer, examples):
    model, ctx, _ = _train("lora_dash", {**train_cfg, "steps": 12}, tokenizer, examples)
    for name, layer in dash.lora_layers(model):
        rates, idx = ctx.analysis["switch"][name]["rates"], ctx.analysis["switch"][name]["indices"]
        assert idx.tolist() == torch.argsort(-rates, stable=True)[:4].tolist()
        dec = ctx.svd_of(name, layer)
        state = layer.lora_dash["default"]
        torch.testing.assert_close(state.U_S, dec.U[:, idx])
        torch.testing.assert_close(state.V_S, dec.Vh[idx].T)
        assert not state.U_S.requires_grad and state.d.requires_grad


def test_trainable_parameter_counts_match_formulas(train_cfg, tokenizer, examples):
    lora_count = registry.trainable_parameters(_model("lora", train_cfg))
    n_matrices = 2 * len(TARGETS)  # 2 layers
    dash_model, _ = _setup("lora_dash", train_cfg, tokenizer, examples)
    tsd_model, _ = _setup("lora_tsd", train_cfg, tokenizer, examples)
    init_model, _ = _setup("lora_init", train_cfg, tokenizer, examples)
    assert registry.trainable_parameters(dash_model) == lora_count + 4 * n_matrices
    assert registry.trainable_parameters(tsd_model) == lora_count + 4 * n_matrices
    assert registry.trainable_parameters(init_model) == lora_count
    buffers = [n for n, _ in dash_model.named_buffers() if "lora_dash" in n]
    assert buffers and not any("U_S" in n for n, p in dash_model.named_parameters())


@pytest.mark.parametrize("method", ["lora", "lora_dash", "lora_init", "lora_tsd"])
def test_merged_unmerged_and_exported_logits_agree(method, train_cfg, tokenizer, examples, tmp_path):
    cfg = {**train_cfg, "steps": 14}
    model, _, _ = _train(method, cfg, tokenizer, examples)
    ids = _ids(tokenizer)
    unmerged = _logits(model, ids)
    assert not torch.allclose(unmerged, _logits(make_llama(vocab_size=1000), ids), atol=1e-3)
    if registry.METHODS[method].hooks.exports_via_factors:
        info = export.export_adapter(model, tmp_path)
        extra = {"lora": 0, "lora_dash": 4, "lora_init": 4, "lora_tsd": 8}[method]
        assert info["export_rank"] == 4 + extra
    else:
        model.save_pretrained(tmp_path)
    stock = PeftModel.from_pretrained(make_llama(vocab_size=1000), str(tmp_path)).eval()
    torch.testing.assert_close(_logits(stock, ids), unmerged, rtol=1e-4, atol=1e-4)
    merged = model.merge_and_unload()
    torch.testing.assert_close(_logits(merged, ids), unmerged, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("estimate", ["warmup", "gradient"])
@pytest.mark.parametrize("scale", ["singular", "unit"])
def test_lora_init_keeps_the_output_at_step_zero(estimate, scale, train_cfg, tokenizer, examples):
    tsd_cfg = {**TSD_CFG, "init_estimate": estimate, "init_scale": scale}
    ids = _ids(tokenizer)
    base = _logits(make_llama(vocab_size=1000), ids)
    model, ctx = _setup("lora_init", train_cfg, tokenizer, examples, tsd_cfg=tsd_cfg)
    torch.testing.assert_close(_logits(model, ids), base, rtol=1e-4, atol=1e-4)
    for name, layer in dash.lora_layers(model):
        idx = ctx.analysis["init"][name]["indices"]
        dec = ctx.svd_of(name, layer)
        gains = dec.S[idx] if scale == "singular" else torch.ones(len(idx))
        delta = layer.scaling["default"] * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
        torch.testing.assert_close(delta, (dec.U[:, idx] * gains) @ dec.Vh[idx], rtol=1e-4, atol=1e-5)


def test_lora_init_without_residualising_moves_the_output(train_cfg, tokenizer, examples):
    ids = _ids(tokenizer)
    base = _logits(make_llama(vocab_size=1000), ids)
    model, _ = _setup("lora_init", train_cfg, tokenizer, examples, tsd_cfg={**TSD_CFG, "init_residualise": False})
    assert not torch.allclose(_logits(model, ids), base, atol=1e-3)


@pytest.mark.parametrize("tsd_cfg", [
    {**TSD_CFG, "init_estimate": "warmup", "init_scale": "singular"},
    {**TSD_CFG, "init_estimate": "gradient", "init_scale": "singular"},
    {**TSD_CFG, "init_estimate": "warmup", "init_scale": "unit"},
    {**TSD_CFG, "init_estimate": "gradient", "init_scale": "unit", "init_residualise": False},
])
def test_every_lora_init_option_trains(tsd_cfg, train_cfg, tokenizer, examples):
    _, _, log = _train("lora_init", train_cfg, tokenizer, examples, tsd_cfg=tsd_cfg)
    first, last = sum(log["losses"][:5]) / 5, sum(log["losses"][-5:]) / 5
    assert last < 0.7 * first, (first, last)


@pytest.mark.parametrize("method", ["lora_dash", "lora_tsd"])
def test_resume_across_the_switch_gives_the_same_losses(method, train_cfg, tokenizer, examples, tmp_path):
    cfg = {**train_cfg, "steps": 16, "checkpoint_every": 4}
    tsd_cfg = {**TSD_CFG, "dash_t": 6}
    hooks = registry.METHODS[method].hooks
    model, ctx = _setup(method, cfg, tokenizer, examples, tsd_cfg=tsd_cfg)
    full = loop.fit(model, tokenizer, examples, cfg, 0, hooks=hooks, ctx=ctx)

    ckpt = tmp_path / "state.pt"
    first, ctx1 = _setup(method, cfg, tokenizer, examples, tsd_cfg=tsd_cfg)
    loop.fit(first, tokenizer, examples, cfg, 0, ckpt=ckpt, stop_after=9, hooks=hooks, ctx=ctx1)
    torch.manual_seed(99)
    second, ctx2 = _setup(method, cfg, tokenizer, examples, tsd_cfg=tsd_cfg)
    resumed = loop.fit(second, tokenizer, examples, cfg, 0, ckpt=ckpt, hooks=hooks, ctx=ctx2)
    assert resumed["resumed_from_step"] == 9
    assert resumed["losses"] == pytest.approx(full["losses"], rel=1e-5, abs=1e-6)
    assert ctx2.analysis["switch"].keys() == ctx.analysis["switch"].keys()
    for (_, a), (_, b) in zip(dash.lora_layers(model), dash.lora_layers(second)):
        assert a.lora_dash["default"].indices.tolist() == b.lora_dash["default"].indices.tolist()


def test_svd_cache_is_reused_across_runs(train_cfg, tokenizer, examples, tmp_path):
    cfg = {**train_cfg, "steps": 3}
    _, ctx1, _ = _train("lora_dash", cfg, tokenizer, examples, tsd_cfg={**TSD_CFG, "dash_t": 1}, cache=tmp_path)
    _, ctx2, _ = _train("lora_tsd", cfg, tokenizer, examples, tsd_cfg={**TSD_CFG, "dash_t": 1}, cache=tmp_path)
    matrices = 2 * len(TARGETS)  # two decoder layers
    assert ctx1.cache.misses == matrices and ctx1.cache.hits == 0
    # LoRA-TSD reads each SVD twice, at the init and at the switch (none is kept in between),
    # both times under the key of the original W, though the init residualised it
    assert ctx2.cache.misses == 0 and ctx2.cache.hits == 2 * matrices


def test_lora_init_resume_rebuilds_w_from_the_checkpoint_and_never_reselects(train_cfg, tokenizer, examples,
                                                                             tmp_path):
    cfg = {**train_cfg, "steps": 10, "checkpoint_every": 4}
    hooks = registry.METHODS["lora_init"].hooks
    model, ctx = _setup("lora_init", cfg, tokenizer, examples)
    full = loop.fit(model, tokenizer, examples, cfg, 0, hooks=hooks, ctx=ctx)

    ckpt = tmp_path / "state.pt"
    first, ctx1 = _setup("lora_init", cfg, tokenizer, examples)
    loop.fit(first, tokenizer, examples, cfg, 0, ckpt=ckpt, stop_after=4, hooks=hooks, ctx=ctx1)
    second = _model("lora_init", cfg)
    ctx2 = cell.make_context(tokenizer, examples, cfg, dict(TSD_CFG), 0, torch.device("cpu"), None, None)

    def no_warmup(*_):
        raise AssertionError("a resumed LoRA-Init must not re-run its warm-up")

    ctx2.warmup = no_warmup
    ctx2.resume = checkpoint.read_checkpoint(ckpt)
    hooks.setup(second, ctx2)
    resumed = loop.fit(second, tokenizer, examples, cfg, 0, ckpt=ckpt, hooks=hooks, ctx=ctx2)
    assert resumed["resumed_from_step"] == 4
    assert resumed["losses"] == pytest.approx(full["losses"], rel=1e-5, abs=1e-6)
    for (n, a), (_, b) in zip(dash.lora_layers(model), dash.lora_layers(second)):
        torch.testing.assert_close(a.get_base_layer().weight, b.get_base_layer().weight, msg=n)
    assert {k: v["indices"].tolist() for k, v in ctx2.analysis["init"].items()} == \
        {k: v["indices"].tolist() for k, v in ctx.analysis["init"].items()}


# --- tsd.dash_t_unit: forward, against the official layer's counter (Subspace-Tuning,
# CR_MR/peft/src/peft/tuners/lora-dash.py, Linear.forward): every forward of an unmerged layer,
# training or evaluation, runs `if FLAG < warmup: FLAG += 1; return LoRA`, and the forward that
# finds FLAG == warmup (forward t + 1) takes the directions from the dW of that moment.

FORWARD_CFG = {"steps": 12, "batch_size": 4, "micro_batch_size": 2, "eval_every": 3}  # 2 forwards a step,
VAL_ROWS = 5  # and 3 validation forwards (batches of 2) after steps 3, 6, 9 and 12


class _Done:
    """Wraps a method's hooks and records the last optimizer step the loop has completed."""

    def __init__(self, inner):
        self.inner, self.done = inner, 0
        self.exports_via_factors = inner.exports_via_factors

    def setup(self, model, ctx):
        self.inner.setup(model, ctx)

    def after_step(self, model, step, ctx):
        self.done = step
        return self.inner.after_step(model, step, ctx)


def _official_counter(model, t, s, done):
    """The official counter on the first adapted layer: counts its forwards; at forward t + 1
    records the optimizer steps completed and the top-s directions it would take (its
    calculate_change_rate on the current dW, float32)."""
    name, layer = next(iter(dash.lora_layers(model)))
    seen = {"forwards": 0}

    def pre_hook(module, args):
        seen["forwards"] += 1
        if seen["forwards"] == t + 1:
            with torch.no_grad():
                B, A = layer.lora_B["default"].weight, layer.lora_A["default"].weight
                dw = (B @ A).float() * layer.scaling["default"]
                u, sigma, vt = torch.linalg.svd(layer.get_base_layer().weight.float(), full_matrices=False)
                rates = torch.diag(u.T @ dw @ vt.T).abs() / sigma.abs()
                seen.update(step=done.done, indices=sorted(torch.topk(rates, s).indices.tolist()))

    layer.register_forward_pre_hook(pre_hook)
    return name, seen


def _forward_run(t, base, tokenizer, examples, micro=2, extra=None):
    cfg = {**base, **FORWARD_CFG, "micro_batch_size": micro, **(extra or {})}
    tsd_cfg = {**TSD_CFG, "dash_t": t, "dash_t_unit": "forward"}
    val, train = examples[:VAL_ROWS], examples[VAL_ROWS:]
    model, ctx = _setup("lora_dash", cfg, tokenizer, train, tsd_cfg=tsd_cfg)
    return model, ctx, cfg, train, val


# t = 7: forward 8 is a validation forward after step 3; t = 12: forward 13 is step 5's second
# micro-batch (the official switch comes mid-step: its dW is step 4's); t = 18: forward 19 is
# step 7's first; micro 1: 4 forwards a step, 5 per validation.
@pytest.mark.parametrize("t, micro, official", [(7, 2, 3), (12, 2, 4), (18, 2, 6), (17, 1, 3)])
def test_forward_counted_switch_lands_where_the_official_counter_does(t, micro, official, train_cfg, tokenizer,
                                                                      examples):
    model, ctx, cfg, train, val = _forward_run(t, train_cfg, tokenizer, examples, micro)
    hooks = _Done(registry.METHODS["lora_dash"].hooks)
    name, seen = _official_counter(model, t, TSD_CFG["dash_s"], hooks)
    loop.fit(model, tokenizer, train, cfg, 0, hooks=hooks, ctx=ctx, val_examples=val)
    assert seen["step"] == official  # the official counter, over the same loop
    assert ctx.timings["switch_step"] == official != t  # ours; with dash_t_unit: step it is t
    assert sorted(ctx.analysis["switch"][name]["indices"].tolist()) == seen["indices"]
    # the count is what ran: 12 steps of micro-batches and the validations after steps 3, 6, 9, 12
    per_step, per_val = -(-4 // micro), -(-VAL_ROWS // micro)
    assert seen["forwards"] == 12 * per_step + 4 * per_val  # the end's validation (step 12) included
    assert ctx.forwards.through(12) + per_val == seen["forwards"]


def test_step_unit_ignores_micro_batches_and_validation(train_cfg, tokenizer, examples):
    for unit in ({}, {"dash_t_unit": "step"}):
        model, ctx, cfg, train, val = _forward_run(12, train_cfg, tokenizer, examples)
        ctx.tsd = {**TSD_CFG, "dash_t": 12, **unit}
        loop.fit(model, tokenizer, train, cfg, 0, hooks=registry.METHODS["lora_dash"].hooks, ctx=ctx,
                 val_examples=val, stop_after=4)
        assert ctx.forwards.switch_step(12) == 4 and dash.switch_step(ctx) == 12 and not dash.is_active(model)


@pytest.mark.parametrize("stop_after", [2, 5])
def test_forward_counted_switch_resumes_at_the_same_step(stop_after, train_cfg, tokenizer, examples, tmp_path):
    """t = 18 switches after step 6; a checkpoint at step 2 (before any validation) or 5 (after
    the one of step 3) resumes to the same switch, directions and losses."""
    hooks = registry.METHODS["lora_dash"].hooks
    model, ctx, cfg, train, val = _forward_run(18, train_cfg, tokenizer, examples, extra={"checkpoint_every": 100})
    full = loop.fit(model, tokenizer, train, cfg, 0, hooks=hooks, ctx=ctx, val_examples=val)
    assert ctx.timings["switch_step"] == 6

    ckpt = tmp_path / "state.pt"
    first, ctx1, *_ = _forward_run(18, train_cfg, tokenizer, examples, extra={"checkpoint_every": 100})
    loop.fit(first, tokenizer, train, cfg, 0, ckpt=ckpt, stop_after=stop_after, hooks=hooks, ctx=ctx1,
             val_examples=val)
    assert not dash.is_active(first)
    torch.manual_seed(99)
    second, ctx2, *_ = _forward_run(18, train_cfg, tokenizer, examples, extra={"checkpoint_every": 100})
    resumed = loop.fit(second, tokenizer, train, cfg, 0, ckpt=ckpt, hooks=hooks, ctx=ctx2, val_examples=val)
    assert resumed["resumed_from_step"] == stop_after
    assert ctx2.timings["switch_step"] == 6 and ctx2.forwards == ctx.forwards
    assert resumed["losses"] == pytest.approx(full["losses"], rel=1e-5, abs=1e-6)
    assert [s for s, _ in resumed["val_losses"]] == [3, 6, 9, 12]
    assert [v for _, v in resumed["val_losses"]] == pytest.approx([v for _, v in full["val_losses"]], rel=1e-5)
    for (_, a), (_, b) in zip(dash.lora_layers(model), dash.lora_layers(second)):
        assert a.lora_dash["default"].indices.tolist() == b.lora_dash["default"].indices.tolist()


def test_forward_counted_fraction_and_official_commonsense_arithmetic():
    """The commonsense recipe: batch 16 = micro-batch 16, 120 validation rows in batches of 8
    (the HF Trainer's default) every 80 steps: forwards 1-80 are steps 1-80, 81-95 the
    validation, 96-100 steps 81-85, so the official directions are step 85's, not 100's."""
    cfg = {"batch_size": 16, "micro_batch_size": 16, "eval_every": 80, "val_batch_size": 8}
    count = loop.forward_count(cfg, 170_000, 120)
    assert (count.per_step, count.per_validation) == (1, 15)
    assert count.switch_step(100) == 85 and count.through(85) == 100 and count.through(86) == 101
    assert loop.forward_count({**cfg, "val_batch_size": None}, 170_000, 120).switch_step(100) == 92
    c = Context(train=cfg, tsd={"dash_t": 0.5, "dash_t_unit": "forward"}, total_steps=200, cache=None,
                forwards=count)
    assert count.through(200) == 230 and dash.switch_step(c) == 100  # half of the run's forwards: 115
    with pytest.raises(ValueError, match="dash_t_unit.*allowed values: step, forward"):
        dash.switch_step(Context(train=cfg, tsd={"dash_t": 5, "dash_t_unit": "steps"}, total_steps=9, cache=None))
