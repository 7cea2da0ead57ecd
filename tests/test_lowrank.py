"""Scoring an adapter over bf16 weights through lora_tsd/lowrank.py: the side branch computes
the adapter's own update (float32: peft's output to rounding), keeps an update whose factors
cancel precise in bf16, leaves layers it does not cover to peft, and the LM head gets a
contiguous input (models.contiguous_head_input)."""
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora.layer import Linear as LoraLinear
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from lora_tsd import lowrank, models

TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]


def _adapted(tiny_model, **extra):
    """The tiny Llama with a trained-looking LoRA: A and B both random (B is zero at init)."""
    torch.manual_seed(1)
    model = get_peft_model(tiny_model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS,
                                                  init_lora_weights=False, **extra))
    return model.eval()


def test_float32_side_branches_give_peft_logits_and_unwrap(tiny_model):
    model = _adapted(tiny_model)
    ids = torch.randint(0, 1000, (3, 12))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        fast, replaced = lowrank.side_branches(model)
        got = fast(input_ids=ids).logits
    assert replaced == len(TARGETS) * tiny_model.config.num_hidden_layers
    assert not isinstance(fast, PeftModel)  # nothing of peft left: the transformers model itself
    assert not any(isinstance(m, BaseTunerLayer) for m in fast.modules())
    assert (got - expected).abs().max() < 1e-5 * expected.abs().max()
    assert (expected - _base_logits(ids)).abs().max() > 1e-2  # the adapter changes the logits


def _base_logits(ids):
    from lora_tsd.tiny import make_llama

    with torch.no_grad():
        return make_llama(vocab_size=1000, seed=0)(input_ids=ids).logits


def _layer(out: int, bias: bool, alpha: int = 16, seed: int = 3):
    """One trained-looking LoRA layer (A and B random) of rank 8 on a 64 -> `out` linear layer."""
    torch.manual_seed(seed)
    holder = nn.Sequential()
    holder.add_module("proj", nn.Linear(64, out, bias=bias))
    config = LoraConfig(r=8, lora_alpha=alpha, target_modules=["proj"], init_lora_weights=False)
    layer = get_peft_model(holder, config).base_model.model.proj.eval()
    assert isinstance(layer, LoraLinear)
    return layer


def _cancelling_layer():
    """One LoRA layer exported as a residualised init is: B = [B1, -B0], A = [A1; A0] with
    B1 A1 close to B0 A0, so its update is a small difference of large factors."""
    layer = _layer(48, False, alpha=8, seed=2)  # scaling 1
    b0, a0 = torch.randn(48, 4), torch.randn(4, 64)
    layer.lora_B["default"].weight.data = torch.cat([b0 + 1e-3 * torch.randn(48, 4), -b0], dim=1)
    layer.lora_A["default"].weight.data = torch.cat([a0 + 1e-3 * torch.randn(4, 64), a0], dim=0)
    return layer


def test_an_update_whose_factors_cancel_keeps_its_precision_in_bf16():
    layer = _cancelling_layer()
    x = torch.randn(16, 64)
    a, b = layer.lora_A["default"].weight.detach().double(), layer.lora_B["default"].weight.detach().double()
    exact = x.double() @ (b @ a).T  # scaling is 1
    up, down = lowrank.factors(layer)
    ours = (x.bfloat16() @ down.bfloat16().T) @ up.bfloat16().T
    naive = (x.bfloat16() @ a.bfloat16().T) @ b.bfloat16().T  # the exported factors cast as they are
    err = lambda y: float((y.double() - exact).norm() / exact.norm())  # noqa: E731
    assert err(ours) < 2e-2
    assert err(naive) > 10 * err(ours)


@pytest.mark.parametrize("out, bias", [(48, False), (6, True)])  # rank 8 above 6 outputs; a bias
def test_the_side_branch_is_peft_s_layer_in_float32(out, bias):
    layer = _layer(out, bias)
    up, down = lowrank.factors(layer)
    branch = lowrank.LowRankLinear(layer.get_base_layer(), up, down)
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        assert torch.allclose(branch(x), layer(x), atol=1e-5)
    assert branch.weight is layer.get_base_layer().weight and branch.bias is layer.get_base_layer().bias


def test_the_side_branch_adds_the_update_into_the_frozen_output_in_bf16():
    layer = _layer(48, False)
    base = layer.get_base_layer()
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        update = (layer(x) - base(x)).double()  # peft's own update, float32
        up, down = lowrank.factors(layer)
        half = base.bfloat16()
        branch = lowrank.LowRankLinear(half, up.bfloat16(), down.bfloat16())
        got = branch(x.bfloat16())
        added = got.double() - half(x.bfloat16()).double()  # what the branch added, rounded into y
    assert got.dtype == torch.bfloat16 and got.shape == (2, 5, 48)
    ulp = half(x.bfloat16()).double().abs().max() * 2 ** -8  # bf16's spacing at the output's scale
    assert (added - update).abs().max() < 2 * ulp + 0.02 * update.abs().max()
    assert update.abs().max() > 20 * ulp  # an update well above rounding: the check has teeth


def test_layers_it_does_not_cover_stay_with_peft(tiny_model):
    model = _adapted(tiny_model, use_dora=True)
    ids = torch.randint(0, 1000, (2, 7))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        same, replaced = lowrank.side_branches(model)
        got = same(input_ids=ids).logits
    assert replaced == 0 and same is model  # DoRA's magnitude is not a low-rank term: peft scores it
    assert torch.equal(got, expected)


@pytest.mark.parametrize("keep", [1, 3])
def test_the_lm_head_gets_a_contiguous_input_and_the_same_logits(tiny_model, keep):
    tiny_model.requires_grad_(False).eval()  # frozen, as under an adapter: the slow case
    ids = torch.randint(0, 1000, (4, 9))
    with torch.no_grad():
        expected = tiny_model(input_ids=ids, logits_to_keep=keep).logits
        models.contiguous_head_input(tiny_model)
        seen = []
        tiny_model.get_output_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0]))
        got = tiny_model(input_ids=ids, logits_to_keep=keep).logits
    assert seen[0].shape == (4, keep, tiny_model.config.hidden_size) and seen[0].is_contiguous()
    assert torch.allclose(got, expected, atol=1e-6)
