"""Task-specific-direction math: SVD of a weight, change rates of its core directions under a
low-rank update, and top-k selection. Notation follows Si et al. (arXiv 2409.01035):
W = U diag(s) V^T, and the change rate of direction i under dW is |u_i^T dW v_i| / s_i."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import atomic, kernels


def live_directions(dec: "SVD") -> torch.Tensor:
    """Singular values above the numerical-rank cutoff max(m, n) * eps * s_max (numpy's
    matrix_rank rule, eps of the SVD's dtype). Below it a singular value is rounding noise and
    its direction is not a direction of W: its change rate is defined as 0, not |proj| / ~0."""
    m, n = dec.U.shape[0], dec.Vh.shape[1]
    cutoff = max(m, n) * torch.finfo(dec.S.dtype).eps * dec.S.max().clamp_min(torch.finfo(dec.S.dtype).tiny)
    return dec.S > cutoff


@dataclass
class SVD:
    U: torch.Tensor  # out x k
    S: torch.Tensor  # k, descending
    Vh: torch.Tensor  # k x in


def svd(weight: torch.Tensor, dtype: torch.dtype = torch.float32) -> SVD:
    U, S, Vh = torch.linalg.svd(weight.detach().to(dtype), full_matrices=False)
    return SVD(U, S, Vh)


def projected_change(U: torch.Tensor, Vh: torch.Tensor, B: torch.Tensor, A: torch.Tensor,
                     scale: float = 1.0) -> torch.Tensor:
    """diag(U^T (scale * B A) V) without forming B A: row sums of (U^T B) * (A V)^T."""
    dtype = U.dtype
    UtB = U.T @ B.to(dtype)  # k x r
    AV = A.to(dtype) @ Vh.T  # r x k
    return scale * (UtB * AV.T).sum(dim=1)


def change_rates(dec: SVD, B: torch.Tensor, A: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """delta_i = |u_i^T dW v_i| / s_i for dW = scale * B @ A; 0 where s_i is (numerically) zero."""
    proj = projected_change(dec.U, dec.Vh, B, A, scale).abs()
    live = live_directions(dec)
    return torch.where(live, proj / torch.where(live, dec.S, torch.ones_like(dec.S)), torch.zeros_like(proj))


def change_rates_full(dec: SVD, dW: torch.Tensor) -> torch.Tensor:
    """The same rates for a dense change (e.g. an accumulated gradient)."""
    proj = ((dec.U.T @ dW.to(dec.U.dtype)) * dec.Vh).sum(dim=1).abs()
    live = live_directions(dec)
    return torch.where(live, proj / torch.where(live, dec.S, torch.ones_like(dec.S)), torch.zeros_like(proj))


def top_directions(rates: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest change rates, largest first (ties by lower index)."""
    k = min(k, rates.numel())
    order = torch.argsort(-rates, stable=True)
    return order[:k]


# How a dash picks its directions: the TSDs (largest change rate, the paper's rule) or, as the
# paper's ablations, the largest singular values (PiSSA's), the smallest live ones (MiLoRA's),
# or live directions at random.
SELECTIONS = ("rate", "top", "bottom", "random")


def chosen_directions(dec: SVD, rates: torch.Tensor, k: int, how: str = "rate",
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """k direction indices by rule `how` (SELECTIONS). Only live directions are candidates of
    the ablations, unless fewer than k are live."""
    if how == "rate":
        return top_directions(rates, k)
    n = dec.S.numel()
    k = min(k, n)
    live = torch.nonzero(live_directions(dec)).flatten().cpu()  # ascending index: descending singular value
    pool = live if live.numel() >= k else torch.arange(n)
    if how == "top":
        return pool[:k]
    if how == "bottom":
        return pool[-k:].flip(0)  # smallest first
    if how == "random":
        return pool[torch.randperm(pool.numel(), generator=generator)[:k]]
    raise ValueError(f"unknown direction rule {how!r}; allowed values: {', '.join(SELECTIONS)}")


class SVDCache:
    """Content-addressed on-disk cache of weight SVDs: the key is the weight's bytes and the
    precision, so a grid over one model pays for each module's SVD once, whatever the method,
    rank, task or seed."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root else None
        self.hits = self.misses = 0

    def key(self, weight: torch.Tensor, dtype: torch.dtype) -> str:
        w = weight.detach().to("cpu").contiguous()
        h = hashlib.sha256(w.view(torch.uint8).numpy().tobytes())
        h.update(f"{tuple(w.shape)}|{w.dtype}|{dtype}".encode())
        if kernels.pinned():  # the exact switch's SVDs come from its pinned kernels: kept apart
            h.update(json.dumps(kernels.pinned(), sort_keys=True).encode())
        return h.hexdigest()[:32]

    def get(self, weight: torch.Tensor, dtype: torch.dtype = torch.float32, key: str | None = None) -> SVD:
        """The SVD of `weight`, on its device: from disk (under `key`, default the weight's
        own), else computed there and stored."""
        if self.root is None:
            self.misses += 1
            return svd(weight, dtype)
        path = self.path(key or self.key(weight, dtype))
        if path.exists():
            try:
                d = torch.load(path, weights_only=True, map_location=weight.device)  # where the model runs
                self.hits += 1
                return SVD(d["U"], d["S"], d["Vh"])
            except Exception as err:  # a truncated or corrupt entry: recompute it
                atomic.set_aside(path, f"{type(err).__name__}: {err}")
        self.misses += 1
        dec = svd(weight, dtype)
        with atomic.file(path) as tmp:  # concurrent writers produce identical bytes; last rename wins
            torch.save({"U": dec.U, "S": dec.S, "Vh": dec.Vh}, tmp)
        return dec

    def path(self, key: str) -> Path:
        """Where the entry of `key` is kept (needs a cache dir)."""
        return self.root / f"{key}.pt"

    def report(self) -> str:
        return f"[svd-cache] {self.hits} hits, {self.misses} computed ({self.root or 'no cache dir'})"
