"""Export any trained adapter as a standard peft LoRA adapter relative to the original base
weights, so stock `PeftModel.from_pretrained` (and lm-eval's `peft=`) load it unchanged.
LoRA-Dash exports as rank r + s; a residualised init adds its r removed directions (the way
peft converts PiSSA): dW = [scaling B, -scaling B0, U_S diag(d)] @ [A; A0; V_S^T]."""
from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model_state_dict
from peft.tuners.lora.layer import LoraLayer
from safetensors.torch import save_file


def lora_layers(model, adapter: str = "default"):
    """(name, layer) for every LoRA-adapted linear layer of a peft model."""
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and adapter in module.lora_A:
            yield name, module


def effective_factors(layer, adapter: str = "default"):
    """The layer's whole change from the original W as factors (B, A), dW = B @ A:
    scaling B A, minus scaling B0 A0 when W was residualised, plus the dash term when active."""
    scaling = layer.scaling[adapter]
    Bs = [layer.lora_B[adapter].weight * scaling]
    As = [layer.lora_A[adapter].weight]
    ref = getattr(layer, "lora_init_ref", None)
    if ref is not None and adapter in ref:
        Bs.append(-scaling * ref[adapter].B0)
        As.append(ref[adapter].A0)
    dash = getattr(layer, "lora_dash", None)
    if dash is not None and adapter in dash and dash[adapter].on:
        Bs.append(dash[adapter].U_S * dash[adapter].d)
        As.append(dash[adapter].V_S.T)
    return torch.cat(Bs, dim=1), torch.cat(As, dim=0)


def original_weight(layer, adapter: str = "default") -> torch.Tensor:
    """W before residualisation."""
    w = layer.get_base_layer().weight
    ref = getattr(layer, "lora_init_ref", None)
    if ref is None or adapter not in ref:
        return w
    return w + layer.scaling[adapter] * (ref[adapter].B0 @ ref[adapter].A0)


def export_adapter(model, out: str | Path, adapter: str = "default") -> dict:
    """Write adapter_config.json + adapter_model.safetensors with scaling 1 (alpha = r)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state, ranks = {}, {}
    for name, layer in lora_layers(model, adapter):
        B, A = effective_factors(layer, adapter)
        state[f"{name}.lora_A.weight"] = A.detach().float().contiguous().cpu()
        state[f"{name}.lora_B.weight"] = B.detach().float().contiguous().cpu()
        ranks[name.removeprefix("base_model.model.")] = A.shape[0]
    # Heads that train in full beside the adapter (a classifier), under peft's own keys.
    state.update({k: v.detach().float().contiguous().cpu()
                  for k, v in get_peft_model_state_dict(model, adapter_name=adapter).items() if ".lora_" not in k})
    src = model.peft_config[adapter]
    rank = max(ranks.values())
    pattern = {k: v for k, v in ranks.items() if v != rank}
    cfg = LoraConfig(
        r=rank, lora_alpha=rank, target_modules=src.target_modules, lora_dropout=src.lora_dropout,
        bias="none", task_type=src.task_type, base_model_name_or_path=src.base_model_name_or_path,
        rank_pattern=pattern, alpha_pattern=dict(pattern), modules_to_save=src.modules_to_save,
    )
    cfg.save_pretrained(out)
    save_file(state, out / "adapter_model.safetensors")
    return {"export_rank": rank, "rank_pattern": pattern}
