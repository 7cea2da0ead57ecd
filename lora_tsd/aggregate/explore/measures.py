"""The exploration's measures, each on one matrix's recorded change rates (index i is the i-th
singular direction of the pretrained W, largest first), in the paper's terms:
- the true TSDs: the directions with the largest change rates under full fine-tuning's dW*;
- recall: the share of the true top-4 among a method's top-8 (does LoRA contain them?);
- accuracy: the share of a method's top-8 inside the true top-16 (is what it finds true?);
- projection: |u_i^T dW v_i| = rate_i * s_i along given directions (how far dW moves there)."""
from __future__ import annotations

import numpy as np

from ..analysis import selected_at_end

FOUND, TRUE_TOP, TRUE_POOL = 8, 4, 16  # the paper's sizes: a method's top-8, the true top-4 and top-16
AMPLIFIED = 8  # true directions the amplification reads (the official dash size s)


def ranked(rates) -> np.ndarray:
    """Direction indices by change rate, largest first (ties by lower index, as tsd.top_directions)."""
    return selected_at_end(rates, len(rates))


def recall(found, true_top) -> float:
    """|found ∩ true_top| / |true_top|."""
    true_top = set(np.asarray(true_top).tolist())
    return len(set(np.asarray(found).tolist()) & true_top) / len(true_top) if true_top else float("nan")


def accuracy(found, true_pool) -> float:
    """|found ∩ true_pool| / |found|."""
    found = set(np.asarray(found).tolist())
    return len(found & set(np.asarray(true_pool).tolist())) / len(found) if found else float("nan")


def chance_recall(n: int, found: int = FOUND) -> float:
    """Expected recall of `found` directions drawn at random from n."""
    return min(found, n) / n


def chance_accuracy(n: int, pool: int = TRUE_POOL) -> float:
    """Expected accuracy of directions drawn at random from n."""
    return min(pool, n) / n


def projections(rates, singular_values, indices) -> np.ndarray:
    """|u_i^T dW v_i| for the given directions, from the recorded rates |u_i^T dW v_i| / s_i."""
    idx = np.asarray(indices, int)
    return np.asarray(rates, float)[idx] * np.asarray(singular_values, float)[idx]


def positions(indices, n: int) -> dict[str, float]:
    """Where directions sit among n: their median index, and mean relative position (0 = the
    largest singular value, 1 = the smallest)."""
    idx = np.asarray(indices, int)
    return {"median_index": float(np.median(idx)), "relative_position": float(np.mean(idx / max(n - 1, 1)))}


def regions(indices, n: int, r: int) -> dict[str, float]:
    """Shares of the directions inside PiSSA's top-r, MiLoRA's bottom-r (of all n, as
    methods/milora.py takes them), and between the two."""
    idx = np.asarray(indices, int)
    top, bottom = idx < r, idx >= n - r
    return {"in_top_r": float(np.mean(top)), "in_bottom_r": float(np.mean(bottom)),
            "between": float(np.mean(~top & ~bottom))}
