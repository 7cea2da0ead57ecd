"""The SVD stage (rule svd_cache, workflow/rules/stages.smk): every SVD a model's cells read,
computed once into the disk cache (tsd.SVDCache) before any of them, so that LoRA-Dash's switch
and LoRA-Init's and MiLoRA's inits read the cache instead of a model's first cell computing the
SVDs inside its train time (and two cells side by side computing the same ones). The entries are
keyed as the cells key them: the original W of each adapted matrix, loaded in the dtype and on
the device a cell loads it, and the SVD's dtype. A manifest records each key and its cost."""
from __future__ import annotations

import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from .. import atomic, models
from . import export, tsd
from .lora import for_task

SVD_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def load(model_src: str, kind: str, base_dtype: str, device: torch.device):
    """The base model on `device` as a cell loads it, the peft options that go with it and the
    dtype of its weights: a causal LM in what `train.base_dtype` resolves to there, an encoder in
    float32 (with a fresh classifier head: no target matrix, so any head will do)."""
    if kind == "encoder":
        base, _ = models.load_classifier(model_src, num_labels=2)
        return base.to(device), {"task_type": "SEQ_CLS", "modules_to_save": models.head_modules(base)}, torch.float32
    dtype = models.weights_dtype(base_dtype, device)
    base, _ = models.load_causal_lm(model_src, dtype)
    return base.to(device), {}, dtype


def svd_cache(model_src: str, kind: str, base_dtype: str, svd_dtype: str, targets: list[str] | None,
              cache_dir: str | Path | None, out: str | Path, threads: int = 1) -> dict:
    """Fill `cache_dir` with the SVD of every target matrix a cell adapts (those already there
    are kept, unread), then write the manifest `out`: module -> key, shape, whether computed and
    its seconds. Without a cache dir (`tsd.svd_cache: false`) nothing is kept, so nothing is
    computed ahead: the manifest says so."""
    started = time.perf_counter()
    if cache_dir is None:
        manifest = {"svd_cache": False, "base_dtype_option": base_dtype, "svd_dtype": svd_dtype, "matrices": {}}
        atomic.write_json(out, manifest)
        return manifest
    torch.set_num_threads(threads)
    device, _ = models.pick_device()
    base, peft_extra, dtype = load(model_src, kind, base_dtype, device)
    # The layers peft adapts for these targets, exactly as a cell's adapter finds them.
    config = for_task(LoraConfig(r=1, target_modules=models.target_modules(base, targets)), **peft_extra)
    model = get_peft_model(base, config)
    cache, precision = tsd.SVDCache(cache_dir), SVD_DTYPES[svd_dtype]
    matrices = {}
    for name, layer in export.lora_layers(model):
        weight = export.original_weight(layer)
        key = cache.key(weight, precision)
        t0 = time.perf_counter()
        computed = not cache.path(key).exists()
        if computed:
            cache.get(weight, precision, key=key)  # computed on the device, stored
            if device.type == "cuda":
                torch.cuda.synchronize()
        matrices[name.removeprefix("base_model.model.")] = {
            "key": key, "shape": list(weight.shape), "computed": computed, "seconds": time.perf_counter() - t0}
    manifest = {
        "svd_cache": True, "cache_dir": str(cache_dir), "base_dtype_option": base_dtype,
        "base_dtype": str(dtype).removeprefix("torch."), "svd_dtype": svd_dtype, "device": str(device),
        "threads": threads, "computed": sum(m["computed"] for m in matrices.values()),
        "kept": sum(not m["computed"] for m in matrices.values()),
        "svd_s": sum(m["seconds"] for m in matrices.values() if m["computed"]),
        "stage_s": time.perf_counter() - started, "matrices": matrices,
    }
    atomic.write_json(out, manifest)  # after every entry: a finished manifest means a full cache
    return manifest
