"""Uncertainty from per-item scores: a bootstrap confidence interval per table cell, and a
paired comparison of two methods on the same items.

- An item is one held-out test row. `Items` holds one record's per-item data for one metric.
- A cell's estimate is the mean over seeds of its per-seed score (a task average: the mean
  over tasks within each seed).
- CI: a two-level bootstrap. Each replicate draws the seeds with replacement, then the items
  of each drawn seed with replacement, so the interval covers test-set sampling and
  seed-to-seed variation. With one seed it is the plain item bootstrap.
- Paired comparison: the same draws for both methods (items aligned by their hash), and a
  sign-flip permutation test (each item's two outputs swapped at random; two-sided), which
  for 0/1 scores is McNemar's exact test done by simulation.
Scores are in % like the tables."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

N_BOOT = 2000
N_PERM = 10000
LEVEL = 0.95
CHUNK = 1000  # replicates computed at a time (bounds memory on large test sets)


@dataclass(frozen=True)
class Items:
    """One record's per-item data for one metric. kind 'mean': a[i]/b[i] is item i's score
    pair (IFEval's instruction-level metrics: checks passed / checks), pooled as sum(a)/sum(b).
    A GLUE kind (accuracy, f1, ...): a = predictions, b = labels, scored as a whole."""

    kind: str
    ids: tuple[str, ...]
    a: np.ndarray
    b: np.ndarray

    @property
    def n(self) -> int:
        return len(self.ids)


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x - x.mean(1, keepdims=True)
    y = y - y.mean(1, keepdims=True)
    den = np.sqrt((x * x).sum(1) * (y * y).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (x * y).sum(1) / den, 0.0)


def _counts(pred: np.ndarray, label: np.ndarray):
    p, t = pred == 1, label == 1
    return (p & t).sum(1), (~p & ~t).sum(1), (p & ~t).sum(1), (~p & t).sum(1)


def _f1(pred, label):
    tp, _, fp, fn = _counts(pred, label)
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0)


def _mcc(pred, label):
    tp, tn, fp, fn = (c.astype(float) for c in _counts(pred, label))
    den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return np.where(den > 0, (tp * tn - fp * fn) / np.where(den > 0, den, 1), 0.0)


# Row-wise statistics (each row a replicate), matching evaluate's GLUE metric on the full set.
STATISTICS = {
    "mean": lambda a, b: a.sum(1) / b.sum(1),
    "accuracy": lambda pred, label: (pred == label).mean(1),
    "f1": _f1,
    "matthews_correlation": _mcc,
    "pearson": _pearson,
    "spearmanr": lambda x, y: _pearson(rankdata(x, axis=1), rankdata(y, axis=1)),
}


def statistic(kind: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The metric in % for each row of a (replicates x items) pair of arrays."""
    return 100 * STATISTICS[kind](np.atleast_2d(a), np.atleast_2d(b))


def score(tasks: list[Items]) -> float:
    """One seed's score: the mean over tasks of each task's metric on all its items."""
    return float(np.mean([statistic(t.kind, t.a, t.b)[0] for t in tasks]))


def _chunks(total: int):
    for start in range(0, total, CHUNK):
        yield min(CHUNK, total - start)


def _boot_seed(tasks: list[Items], reps: int, rng: np.random.Generator, other: list[Items] | None = None):
    """Item-bootstrap replicates of one seed's score (or of its difference with `other`,
    drawn on the same items)."""
    out = np.zeros(reps)
    for i, t in enumerate(tasks):
        idx = rng.integers(0, t.n, (reps, t.n))
        out += statistic(t.kind, t.a[idx], t.b[idx])
        if other is not None:
            o = other[i]
            out -= statistic(o.kind, o.a[idx], o.b[idx])
    return out / len(tasks)


def _two_level(seeds: list, draw, reps: int, rng: np.random.Generator) -> np.ndarray:
    """Replicates of the mean over seeds: seeds drawn with replacement, then `draw(seed, reps)`
    (an independent item bootstrap of that seed) at each drawn position."""
    k = len(seeds)
    choice = rng.integers(0, k, (reps, k))
    total = np.zeros(reps)
    for j in range(k):
        per_seed = np.stack([draw(s, reps) for s in seeds])
        total += per_seed[choice[:, j], np.arange(reps)]
    return total / k


def _interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval whose ends are replicate values (no interpolation): a bound is a
    score the bootstrap produced, never one nudged just past 0 between two replicates."""
    tail = (1 - level) / 2
    # Rounded: a difference of equal scores computed two ways is 1e-15, not 0, and would
    # otherwise count as a bound above 0.
    return (round(float(np.quantile(replicates, tail, method="lower")), 9),
            round(float(np.quantile(replicates, 1 - tail, method="higher")), 9))


def cell_ci(per_seed: list[list[Items]], n_boot: int = N_BOOT, level: float = LEVEL,
            rng: np.random.Generator | None = None) -> tuple[float, float]:
    """95% CI of a cell's mean over seeds; per_seed[s] lists the tasks' items of seed s."""
    rng = rng or np.random.default_rng(0)
    reps = np.concatenate([_two_level(per_seed, lambda s, r: _boot_seed(s, r, rng), n, rng)
                           for n in _chunks(n_boot)])
    return _interval(reps, level)


def align(x: Items, y: Items) -> tuple[Items, Items]:
    """The two records' items in one order; they must be the same items, scored alike."""
    if x.kind != y.kind or set(x.ids) != set(y.ids):
        raise ValueError(f"paired records differ in their items ({x.n} vs {y.n} items, kinds {x.kind}/{y.kind})")
    order = {h: i for i, h in enumerate(y.ids)}
    idx = np.array([order[h] for h in x.ids])
    y = Items(y.kind, x.ids, y.a[idx], y.b[idx])
    if not np.array_equal(x.b, y.b):  # labels, or per-item instruction counts
        raise ValueError("paired records give the same items different labels or weights")
    return x, y


def _perm_seed(pairs: list[tuple[Items, Items]], reps: int, rng: np.random.Generator) -> np.ndarray:
    """One seed's difference under random swaps of each item's two outputs."""
    out = np.zeros(reps)
    for x, y in pairs:
        swap = rng.random((reps, x.n)) < 0.5
        b = np.broadcast_to(x.b, swap.shape)
        out += statistic(x.kind, np.where(swap, y.a, x.a), b) - statistic(x.kind, np.where(swap, x.a, y.a), b)
    return out / len(pairs)


def paired(method: dict[int, list[Items]], baseline: dict[int, list[Items]], n_boot: int = N_BOOT,
           n_perm: int = N_PERM, level: float = LEVEL, rng: np.random.Generator | None = None) -> dict:
    """method - baseline on the seeds both have: mean difference over seeds, its CI (the
    two-level bootstrap, same draws for both) and the permutation p-value."""
    rng = rng or np.random.default_rng(0)
    seeds = sorted(set(method) & set(baseline))
    if not seeds:
        raise ValueError("no seed in common")
    pairs = {s: [align(x, y) for x, y in zip(method[s], baseline[s], strict=True)] for s in seeds}
    diff = float(np.mean([score([x for x, _ in pairs[s]]) - score([y for _, y in pairs[s]]) for s in seeds]))

    def draw(s, r):
        return _boot_seed([x for x, _ in pairs[s]], r, rng, other=[y for _, y in pairs[s]])

    reps = np.concatenate([_two_level(seeds, draw, n, rng) for n in _chunks(n_boot)])
    low, high = _interval(reps, level)
    null = np.concatenate([np.mean([_perm_seed(pairs[s], n, rng) for s in seeds], axis=0) for n in _chunks(n_perm)])
    extreme = int((np.abs(null) >= abs(diff) - 1e-9).sum())
    return {"diff": diff, "ci_low": low, "ci_high": high, "p": (1 + extreme) / (1 + n_perm),
            "seeds": len(seeds), "n_items": sum(x.n for x, _ in pairs[seeds[0]])}
