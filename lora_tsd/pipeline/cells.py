"""A grid cell's train options: `train`, then the override sections' entries for the cell."""
from __future__ import annotations

# Per-cell train options: `train`, then these sections' entries for the cell, in this order.
OVERRIDES = ("family_train", "train_set_train", "method_train")
LENGTH_KEYS = ("steps", "epochs")  # a run's length: an override of one replaces the other


def merge_train(train: dict, *overrides: dict) -> dict:
    """`train` with each override applied in turn; giving `steps` drops an inherited `epochs`
    and the reverse, so a family or method can switch how its run length is counted."""
    merged = dict(train)
    for override in overrides:
        for key in LENGTH_KEYS:
            if override.get(key) is not None:
                merged.pop(LENGTH_KEYS[1 - LENGTH_KEYS.index(key)], None)
        merged.update(override)
    return merged


def cell_train(config: dict, family: str, train_set: str, method: str) -> dict:
    """The train options of one grid cell."""
    keys = {"family_train": family, "train_set_train": train_set, "method_train": method}
    return merge_train(config["train"], *[(config.get(sec) or {}).get(keys[sec], {}) for sec in OVERRIDES])
