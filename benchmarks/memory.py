"""Training memory of an 8B cell, from parts measured on the CPU: the bytes autograd saves for
the backward pass in one decoder layer of the model's shape (random init, bf16 weights, bf16
autocast, LoRA on q/k/v/up/down with dropout), with and with gradient checkpointing (each layer's input kept, one layer recomputed at a time),
scaled to the model's layers and the batch's tokens, plus weights, adapter, optimizer state
and LoRA-Dash's switch.

    python benchmarks/memory.py [--shape llama3-8b] [--rank 32] [--batch 16] [--seq 256]

Writes benchmarks/results/memory_<shape>.json and prints the table the README quotes. Saved
activations are counted once per storage (a tensor several ops save counts once). The CPU's
attention kernel saves what a GPU's fused kernel may not (the score matrix at most, small at
256 tokens), so the activation figure is an upper bound for a GPU. Not counted: the CUDA
context and the allocator's fragmentation (about 1-2 GB on a GPU)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lora_tsd import models, provenance
from lora_tsd.methods import registry

HERE = Path(__file__).resolve().parent
GIB = 2**30
SHAPES = {
    # Meta-Llama-3-8B's config.json
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
    # LLaMA-7B (the paper's other commonsense model)
    "llama-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False),
}


def one_layer(shape: dict, dtype) -> LlamaForCausalLM:
    """The shape with one decoder layer and a small vocabulary (the head is counted apart)."""
    cfg = LlamaConfig(**{**shape, "num_hidden_layers": 1, "vocab_size": 1024})
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).to(dtype)


def saved_bytes(model, ids) -> int:
    """Bytes of distinct storages autograd keeps for the backward of one forward pass of the
    decoder (the head is counted apart)."""
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    model.train()
    decoder = (model.get_base_model() if hasattr(model, "get_base_model") else model).model
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = decoder(input_ids=ids).last_hidden_state
    out.float().sum().backward()
    return sum(storages.values())


def measure(shape_name: str, rank: int, seq: int, dropout: float) -> float:
    """Saved bytes per token of one decoder layer with its LoRA: the slope over two sequence
    lengths (weights, and their per-step casts, do not grow with tokens), one layer less
    zero layers (the embedding's share)."""
    shape = SHAPES[shape_name]
    slopes = []
    for layers in (0, 1):
        base = one_layer(shape, torch.bfloat16)
        base.model.layers = base.model.layers[:layers]
        base.config.num_hidden_layers = layers
        model = registry.attach("lora", base, rank, {"lora_alpha_ratio": 2, "lora_dropout": dropout},
                                models.TARGET_MODULES["llama"]) if layers else base.requires_grad_(True)
        sizes = []
        for n in (seq // 2, seq):
            ids = torch.randint(0, 1024, (1, n), generator=torch.Generator().manual_seed(0))
            sizes.append(saved_bytes(model, ids))
        slopes.append((sizes[1] - sizes[0]) / (seq - seq // 2))
    return slopes[1] - slopes[0]


def adapter_params(shape: dict, rank: int) -> int:
    h, i, kv = shape["hidden_size"], shape["intermediate_size"], shape["hidden_size"] // shape[
        "num_attention_heads"] * shape["num_key_value_heads"]
    per_layer = rank * ((h + h) + (h + kv) * 2 + (h + i) * 2)  # q, k, v, up, down
    return per_layer * shape["num_hidden_layers"]


def dash_buffers(shape: dict, s: int) -> int:
    h, i, kv = shape["hidden_size"], shape["intermediate_size"], shape["hidden_size"] // shape[
        "num_attention_heads"] * shape["num_key_value_heads"]
    return s * ((h + h) + (h + kv) * 2 + (h + i) * 2) * shape["num_hidden_layers"]


def largest_svd_bytes(shape: dict) -> int:
    """U, S, Vh of the largest adapted matrix in float32, and a copy of it (the solver's input)."""
    h, i = shape["hidden_size"], shape["intermediate_size"]
    k = min(h, i)
    return 4 * (max(h, i) * k + k + k * min(h, i) + h * i)


def n_params(shape: dict) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in LlamaForCausalLM(LlamaConfig(**shape)).parameters())


def table(shape_name: str, rank: int, s: int, batch: int, seq: int, per_token: dict) -> dict:
    shape = SHAPES[shape_name]
    n, tokens, layers = n_params(shape), batch * seq, shape["num_hidden_layers"]
    adapter = adapter_params(shape, rank)
    rows = {
        "base weights, bf16": 2 * n,
        "base weights, float32": 4 * n,
        "adapter, its gradients and AdamW's two moments (float32)": 16 * adapter,
        "LoRA-Dash U_S, V_S, d (float32)": 4 * dash_buffers(shape, s),
        "LoRA-Dash switch: one layer's SVD at a time (float32, transient)": largest_svd_bytes(shape),
        "saved activations, plain": per_token * layers * tokens,
        # each layer keeps its bf16 input; one layer's activations exist again while it is recomputed
        "saved activations, gradient checkpointing": (2 * shape["hidden_size"] * layers + per_token) * tokens,
        # the head sees only the answer columns (train.answer_loss); at most every token, float32 logits
        "logits at most (float32, every token)": 4 * tokens * shape["vocab_size"],
        "all SVDs at once (what is no longer held)": sum_svd_bytes(shape),
    }
    gib = {k: round(v / GIB, 2) for k, v in rows.items()}
    common = rows["adapter, its gradients and AdamW's two moments (float32)"] + rows[
        "LoRA-Dash U_S, V_S, d (float32)"] + rows["LoRA-Dash switch: one layer's SVD at a time (float32, transient)"] + rows[
        "logits at most (float32, every token)"]
    totals = {f"{w}, {a}": round((rows[f"base weights, {w}"] + rows[f"saved activations, {a}"] + common) / GIB, 1)
              for w in ("bf16", "float32") for a in ("plain", "gradient checkpointing")}
    return {"n_params": n, "adapter_params": adapter, "tokens_per_batch": tokens, "gib": gib,
            "total_gib_lora_dash": totals}


def sum_svd_bytes(shape: dict) -> int:
    h, i, kv = shape["hidden_size"], shape["intermediate_size"], shape["hidden_size"] // shape[
        "num_attention_heads"] * shape["num_key_value_heads"]

    def one(m, n):
        k = min(m, n)
        return 4 * (m * k + k + k * n)

    return shape["num_hidden_layers"] * (one(h, h) + 2 * one(kv, h) + one(i, h) + one(h, i))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="llama3-8b", choices=sorted(SHAPES))
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--s", type=int, default=8)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--dropout", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    per_token = measure(args.shape, args.rank, args.seq, args.dropout)
    result = {"shape": args.shape, "rank": args.rank, "s": args.s, "batch": args.batch, "seq": args.seq,
              "lora_dropout": args.dropout, "saved_bytes_per_token_per_layer": per_token,
              "saved_bytes_note": "measured on the CPU (bf16 autocast, SDPA's math kernel): the slope over tokens of "
                                  "autograd's saved storages, one layer less zero layers",
              **table(args.shape, args.rank, args.s, args.batch, args.seq, per_token),
              "hardware": provenance.hardware(), "packages": provenance.package_versions(),
              "git_commit": provenance.git_commit()}
    out = HERE / "results" / f"memory_{args.shape}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.shape}, r {args.rank}, batch {args.batch} x {args.seq} tokens ({result['n_params'] / 1e9:.2f} B params)")
    for k, v in result["gib"].items():
        print(f"  {k:70s} {v:8.2f} GiB")
    print("  totals, LoRA-Dash (weights + activations + adapter/optimizer + switch + logits):")
    for k, v in result["total_gib_lora_dash"].items():
        print(f"    {k:40s} {v:6.1f} GiB")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
