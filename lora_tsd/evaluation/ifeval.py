"""Offline bridge to lm-eval's IFEval checkers (`lm_eval.tasks.ifeval`).

The checkers tokenize with nltk's `punkt_tab` model, and importing
`lm_eval.tasks.ifeval.instructions_util` calls `nltk.download("punkt_tab")` when that model
is not on nltk's search path. There is no network here, so `ensure_punkt` writes an
*untrained* English punkt_tab model (four empty parameter files, the same tokenizer as
`nltk.tokenize.PunktSentenceTokenizer()`) and puts its folder first on `nltk.data.path`
before anything imports lm-eval's ifeval modules: the download branch is then never taken.
Only sentence splitting (inside `word_tokenize` and the `number_sentences` checker) uses the
model; untrained Punkt splits at every `. ! ?` followed by a capital, without an abbreviation
list. Where a trained punkt_tab is installed (`nltk.download("punkt_tab")` on a machine with
network), it is used instead and nothing is written. `check` scores a response with lm-eval's own `process_results`, not a reimplementation.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

# The files nltk's PunktTokenizer reads from tokenizers/punkt_tab/<lang>/ (nltk >= 3.9).
PUNKT_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")


def _default_root() -> Path:
    env = os.environ.get("NLTK_DATA", "")
    first = next((p for p in env.split(os.pathsep) if p), None)
    if first:
        return Path(first).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "lora_tsd" / "nltk_data"


def trained_punkt(exclude: Path | None = None) -> Path | None:
    """The folder of a trained English punkt_tab model on nltk's search path (its parameter
    files non-empty), other than `exclude`; None when there is none."""
    import nltk

    for entry in nltk.data.path:
        base = Path(entry).expanduser()
        if exclude is not None and base.resolve() == exclude:
            continue
        lang = base / "tokenizers" / "punkt_tab" / "english"
        if (lang / "sent_starters.txt").is_file() and (lang / "sent_starters.txt").stat().st_size > 0:
            return base
    return None


def ensure_punkt(root: str | Path | None = None) -> Path:
    """Use a trained punkt_tab model where nltk finds one; otherwise write the untrained English
    model under `root` (kept if already there), put `root` first on nltk's search path and in
    NLTK_DATA (for subprocesses). Returns the folder in use."""
    import nltk

    root = Path(root).expanduser().resolve() if root else _default_root().resolve()
    trained = trained_punkt(exclude=root)
    if trained is not None:
        if str(root) in nltk.data.path:  # an earlier fallback must not shadow the trained model
            nltk.data.path.remove(str(root))
        return trained
    lang = root / "tokenizers" / "punkt_tab" / "english"
    lang.mkdir(parents=True, exist_ok=True)
    for name in PUNKT_FILES:
        if not (lang / name).exists():
            (lang / name).write_text("", encoding="utf-8")  # empty = untrained parameters
    if str(root) in nltk.data.path:
        nltk.data.path.remove(str(root))
    nltk.data.path.insert(0, str(root))
    rest = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p and p != str(root)]
    os.environ["NLTK_DATA"] = os.pathsep.join([str(root), *rest])
    return root


@functools.cache
def _utils():
    """lm-eval's ifeval utils, imported only after the model is in place (see module doc)."""
    ensure_punkt()
    import langdetect

    # langdetect is random by default; the case checkers call it, so fix its seed.
    langdetect.DetectorFactory.seed = 0
    from lm_eval.tasks.ifeval import utils

    return utils


def registry() -> dict:
    """lm-eval's instruction id -> checker class map."""
    return _utils().instructions_registry.INSTRUCTION_DICT


def check(response: str, instruction_id_list, kwargs, prompt: str) -> dict:
    """Per-instruction strict and loose verdicts from lm-eval's IFEval `process_results`."""
    doc = {"key": 0, "instruction_id_list": list(instruction_id_list), "prompt": prompt,
           "kwargs": list(kwargs)}
    out = _utils().process_results(doc, [response])
    return {"strict": out["inst_level_strict_acc"], "loose": out["inst_level_loose_acc"]}
