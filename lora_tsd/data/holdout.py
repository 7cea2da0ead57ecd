"""The validation hold-out of a train set: the rows a cell trains on and the rows it validates
on. Here, below training and the methods, so a method's workflow stage reads exactly the rows
its cell trains on."""
from __future__ import annotations

import numpy as np


def holdout(rows: list, size: int, seed: int = 42) -> tuple[list, list]:
    """(train, validation): `size` rows held out as LLM-Adapters does with
    datasets' `train_test_split(test_size=size, shuffle=True, seed=42)` (the same rows; a test
    compares with datasets)."""
    if not size:
        return list(rows), []
    if size >= len(rows):
        raise ValueError(f"train.val_size {size} leaves no training rows (the train set has {len(rows)})")
    order = np.random.default_rng(seed).permutation(len(rows))
    return [rows[i] for i in order[size:]], [rows[i] for i in order[:size]]
