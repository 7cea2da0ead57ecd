"""How a config problem is worded: the key as a path, and what is allowed."""
from __future__ import annotations


def key_path(path) -> str:
    """A schema error's path as a config key: 'train.lr', 'methods[0]'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def unknown(key: str, value, allowed) -> str:
    return f"config key '{key}': unknown value {value!r}; allowed values: {', '.join(allowed)}"
