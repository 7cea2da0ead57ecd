"""Job sizes a scheduler needs (host memory, run time) from the model's parameter count and
the cell's config. Each is a documented estimate, sized up rather than down: a job that asks
too little is killed, one that asks too much waits a little longer in the queue. A retry
(Snakemake's `attempt`) gets half as much memory again; a cell that outlives its time limit resumes from its
checkpoint on the next attempt, so run time is capped at `cluster.max_runtime`."""
from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from pathlib import Path

from .. import models

# Bytes per weight as loaded: train.base_dtype / eval.dtype. "auto" is bf16 on the GPU nodes
# these jobs are sized for (a CPU-only node loads float32: set the option to float32 there).
LOAD_BYTES = {"float32": 4, "bfloat16": 2, "auto": 2}
ROWS_IF_UNKNOWN = 400_000  # a train set not built yet: about GLUE MNLI's train split, the largest used
TEST_ROWS_IF_UNKNOWN = 10_042  # a test set not built yet: HellaSwag's, the largest used
DECODE_SLOWDOWN = 10  # a generated token costs about 10 prefill tokens (decoding is memory-bound)
SVD_SLOWDOWN = 100  # an SVD (sequential reductions) sustains about 1% of the throughput cluster.tflops assumes


class SizingError(ValueError):
    pass


def _count_from_config(folder_or_file: Path, kind: str) -> int:
    """Exact parameter count from a config.json, built on the meta device (no weights read)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(str(folder_or_file))
    with torch.device("meta"):
        model = (AutoModelForCausalLM if kind == "causal" else AutoModel).from_config(cfg)
    return sum(p.numel() for p in model.parameters())


def _count_from_name(name: str) -> int | None:
    """'Meta-Llama-3-8B' -> 8e9, 'llama-7b-hf' -> 7e9, 'SmolLM2-135M' -> 1.35e8."""
    found = re.findall(r"(?<![A-Za-z0-9.])(\d+(?:\.\d+)?)([bBmM])(?![A-Za-z])", name.split("/")[-1])
    if not found:
        return None
    value, unit = found[-1]
    return int(float(value) * (1e9 if unit in "bB" else 1e6))


@lru_cache(maxsize=None)
def param_count(name: str, kind: str = "causal", declared: int | None = None, hub_marker: str | None = None) -> int:
    """The model's parameter count: the config's `cluster.model_params`, else the model's own
    config.json (a local folder, or the download rule's record of a hub model), else the size
    its name states, else the embedded registry's figure."""
    if declared:
        return int(declared)
    folder = Path(models.source(name)).expanduser()
    if (folder / "config.json").is_file():
        return _count_from_config(folder, kind)
    if hub_marker and Path(hub_marker).is_file():
        return int(json.loads(Path(hub_marker).read_text())["n_params"])
    from_name = _count_from_name(name)
    if from_name:
        return from_name
    if name in models.EMBEDDED_MODELS:
        return models.EMBEDDED_MODELS[name].params
    raise SizingError(f"cannot size jobs for model {name!r}: its name states no size and it is not downloaded "
                      f"yet; set config key 'cluster.model_params.{name}' to its parameter count")


def _manifest(folder) -> dict:
    path = Path(folder) / "split.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def train_steps(train: dict, train_set_dir=None, tsd: dict | None = None, method: str = "lora") -> int:
    """Optimizer steps the cell will take, its LoRA-Init warm-up included."""
    if train.get("steps"):
        steps = int(train["steps"])
    else:
        rows = _manifest(train_set_dir).get("n_train", ROWS_IF_UNKNOWN) if train_set_dir else ROWS_IF_UNKNOWN
        rows -= train.get("val_size") or 0
        steps = math.ceil(max(rows, 1) * float(train["epochs"]) / train["batch_size"])
    if method in ("lora_init", "lora_tsd") and tsd:
        init = float(tsd.get("init_steps", 0.25))
        steps += int(init) if init >= 1 else int(round(init * steps))
    return steps


def load_bytes(dtype: str | None, trains_weights: bool = False, kind: str = "causal") -> int:
    """Bytes per weight a job loads: encoders and fully fine-tuned models in float32."""
    if kind != "causal" or trains_weights:
        return 4
    return LOAD_BYTES[dtype or "auto"]


def mem_mb(n_params: int, cluster: dict, attempt: int = 1, tsd: bool = False, bytes_per_weight: int = 4) -> int:
    """Host memory: the weights as loaded with half again for loading (the whole again for a
    TSD method: the disk cache's keys read each weight to the host), plus
    `cluster.mem_overhead_mb` for Python, torch and the data; x 1.5 from the second attempt on
    (an out-of-memory kill is one reason for a retry, a time limit another: memory does not
    compound over the attempts a long cell takes)."""
    weights_mb = n_params * bytes_per_weight / 2**20
    need = cluster["mem_overhead_mb"] + weights_mb * (2.0 if tsd else 1.5)
    return int(math.ceil(need * (1.5 if attempt > 1 else 1.0) / 1000) * 1000)


def _minutes(flops: float, cluster: dict) -> int:
    """Start-up (loading the model) plus twice the compute at the assumed sustained rate,
    capped at `cluster.max_runtime` (a cell that needs longer resumes on its next attempt)."""
    compute_min = 2 * flops / (cluster["tflops"] * 1e12) / 60
    return int(min(cluster["max_runtime"], math.ceil(cluster["startup_min"] + compute_min)))


def train_runtime(n_params: int, train: dict, cluster: dict, train_set_dir=None, tsd: dict | None = None,
                  method: str = "lora") -> int:
    """Minutes for a cell: 6 FLOPs per parameter per token (forward and backward through the
    frozen weights), every step's batch padded to max_length."""
    tokens = train_steps(train, train_set_dir, tsd, method) * train["batch_size"] * train["max_length"]
    return _minutes(6 * n_params * tokens, cluster)


def svd_runtime(n_params: int, cluster: dict) -> int:
    """Minutes for a model's SVD stage: an m x n SVD with its vectors costs about 20 m n min(m, n)
    FLOPs; the adapted matrices hold at most n_params weights, and min(m, n) is at most the hidden
    size d, at most sqrt(n_params / 192) (16 or more decoder layers of 12 d^2 weights each); run at
    1 / SVD_SLOWDOWN of cluster.tflops."""
    return _minutes(20 * n_params * math.sqrt(n_params / 192) * SVD_SLOWDOWN, cluster)


def test_rows(eval_cfg: dict, data_dir=None) -> int:
    """Rows a task is scored on: its built test split (or the largest, before it is built),
    cut to eval.limit."""
    rows = _manifest(data_dir).get("n_test", TEST_ROWS_IF_UNKNOWN) if data_dir else TEST_ROWS_IF_UNKNOWN
    return min(rows, eval_cfg["limit"]) if eval_cfg.get("limit") else rows


def eval_runtime(n_params: int, rows: int, prompt_tokens: int, gen_tokens: int, cluster: dict) -> int:
    """Minutes to score one task: per row, `prompt_tokens` of prefill (every choice of a
    log-likelihood protocol) and `gen_tokens` generated (beams included), each at
    DECODE_SLOWDOWN prefill tokens; 2 FLOPs per parameter per token."""
    tokens = rows * (prompt_tokens + gen_tokens * DECODE_SLOWDOWN)
    return _minutes(2 * n_params * tokens, cluster)
