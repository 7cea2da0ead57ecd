"""What code a rule's results depend on, as one hash: the lora_tsd modules its entry module
imports (transitively), each read as a syntax tree without comments or docstrings, less the
math of methods other than the cell's own. A workflow param carries the hash, so an edit
that could change a result reruns exactly the cells it could change; a comment, a reformat
or an edit to a workflow script reruns nothing."""
from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE = "lora_tsd"
ROOT = Path(__file__).resolve().parent.parent
# Files a module reads by path, hashed with it: data byte for byte, Python files it loads by
# path (GLUE's metric script, never imported) as syntax trees like any module.
DATA = {"lora_tsd.data.prepare": ("data/instruction_data/*.jsonl",),
        "lora_tsd.aggregate.reproduction": ("aggregate/reference/*.csv",),
        "lora_tsd.evaluation.metrics": ("evaluation/metrics/glue/*.py",)}


def _path(module: str) -> Path | None:
    parts = module.split(".")[1:]
    if not parts:
        return ROOT / "__init__.py"
    rel = Path(*parts)
    for candidate in (ROOT / rel.with_suffix(".py"), ROOT / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(module: str, tree: ast.AST) -> set[str]:
    """Package modules named by a module's imports (absolute or relative)."""
    is_pkg = _path(module).name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            parent = ".".join(base[: len(base) - node.level + 1]) if node.level else ""
            stem = ".".join(p for p in (parent, node.module or "") if p)
            found.add(stem)
            found |= {f"{stem}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] == PACKAGE and _path(m)}


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _normalised(tree: ast.AST) -> str:
    return ast.dump(_strip_docstrings(tree), annotate_fields=False)


@lru_cache(maxsize=None)
def _parsed(module: str) -> tuple[str, frozenset[str]]:
    """A module's normalised syntax tree (comments and docstrings gone) and its imports."""
    path = _path(module)
    tree = ast.parse(path.read_text(), filename=str(path))
    imports = frozenset(_imports(module, tree))
    dumps = [_normalised(tree)]
    for pattern in DATA.get(module, ()):
        dumps += [_normalised(ast.parse(f.read_text())) if f.suffix == ".py" else hashlib.sha256(f.read_bytes()).hexdigest()
                  for f in sorted(ROOT.glob(pattern))]
    return "\n".join(dumps), imports


def closure(entry: str) -> set[str]:
    """Every package module the entry module reaches through imports, itself included."""
    seen, todo = set(), [entry]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(_parsed(module)[1] - seen)
    return seen


def modules_for(entry: str, method: str | None = None) -> list[str]:
    """The entry's closure less other methods' own modules (Method.modules in the registry)."""
    from ..methods.registry import METHODS

    own = set(METHODS[method].modules) if method else set()
    others = {f"{PACKAGE}.{m}" for name, spec in METHODS.items() for m in spec.modules} - \
        {f"{PACKAGE}.{m}" for m in own}
    return sorted(closure(entry) - others)


def code_hash(entry: str, method: str | None = None) -> str:
    """A short hash of the normalised code that results of `entry` (for `method`) depend on."""
    digest = hashlib.sha256()
    for module in modules_for(entry, method):
        digest.update(module.encode() + b"\0" + _parsed(module)[0].encode() + b"\0")
    return digest.hexdigest()[:16]
