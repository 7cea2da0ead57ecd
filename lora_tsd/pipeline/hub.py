"""Hub access for real-scale configs: what a config needs from the hub, a check that stops
before any job when offline mode would make those downloads fail, and the download of a hub
model into HF_HOME, once, before any training or evaluation job reads it."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

from .. import atomic, models
from .config import local_path

TRUE = {"1", "true", "yes", "on"}
# What from_pretrained reads: configs, tokenizer files (transformers 5 saves the chat template as
# chat_template.jinja) and the weights in one format (safetensors where the repo has them, else
# PyTorch .bin), never both.
MODEL_FILES = ["*.json", "*.model", "*.txt", "*.tiktoken", "tokenizer*", "*.jinja"]
SKIP = ["original/*"]  # a repo's original (non-transformers) checkpoint
# Seconds. A mirror that reads large files before answering (olah holds a worker ~10 s for a
# 270 MB file) outlasts huggingface_hub's 10 s defaults; HF_HUB_ETAG_TIMEOUT and
# HF_HUB_DOWNLOAD_TIMEOUT, when set, win.
ETAG_TIMEOUT, DOWNLOAD_TIMEOUT = 120, 300


def weight_patterns(files: list[str]) -> list[str]:
    return ["*.safetensors"] if any(f.endswith(".safetensors") for f in files) else ["*.bin"]


def hub_needs(config: dict) -> dict[str, list[str]]:
    """Hub models, and what reads hub datasets (data_source: hub; train_data hub ids; a hub
    forgetting text)."""
    hub_models = [m for m in config.get("models", []) if models.is_hub_id(m) and not local_path(m)]
    datasets = [f"data_source: hub ({len(config.get('tasks', []))} tasks)"] if config.get("data_source") == "hub" else []
    datasets += [f"train_data.{ts}: {v}" for ts, v in (config.get("train_data") or {}).items()
                 if not local_path(v)]  # read with either data source
    forgetting = config.get("forgetting") or {}
    if forgetting.get("enabled", True) and isinstance(forgetting.get("text"), dict):
        datasets.append(f"forgetting.text: {forgetting['text'].get('dataset')}")
    return {"models": hub_models, "datasets": datasets}


def offline_problem(config: dict, environ=os.environ) -> str | None:
    """One message naming what to set, when the config needs the hub and the environment
    says offline (HF_HUB_OFFLINE for models, HF_DATASETS_OFFLINE too for datasets)."""
    needs = hub_needs(config)
    switches = ["HF_HUB_OFFLINE"] + (["HF_DATASETS_OFFLINE"] if needs["datasets"] else [])
    blocked = [s for s in switches if environ.get(s, "").strip().lower() in TRUE]
    if not (needs["models"] or needs["datasets"]) or not blocked:
        return None
    wants = ", ".join(needs["models"] + needs["datasets"])
    return (f"this config downloads from the Hugging Face hub ({wants}), but offline mode is on "
            f"({', '.join(f'{s}={environ[s]}' for s in blocked)}). Run it with "
            f"`export {' '.join(f'{s}=0' for s in switches)}` (and HF_TOKEN for gated models; HF_HOME on a shared "
            f"filesystem for a cluster). The download rule fetches each model and dataset once, on this machine; "
            f"training and evaluation jobs then read HF_HOME offline.")


class HubError(RuntimeError):
    """A download that cannot succeed, with what to do about it (a rule fails with this text)."""


def gated_message(name: str) -> str:
    return (f"{name} is a gated model and no accepted token was found: request access on "
            f"https://huggingface.co/{name}, then set HF_TOKEN to a read token of that account "
            f"(`export HF_TOKEN=hf_...`, or `hf auth login` once) and rerun.")


def timeouts(environ=os.environ) -> tuple[float, float]:
    """(metadata, transfer) timeouts in seconds: the HF_HUB_* variables where set, else ours."""
    return (float(environ.get("HF_HUB_ETAG_TIMEOUT") or ETAG_TIMEOUT),
            float(environ.get("HF_HUB_DOWNLOAD_TIMEOUT") or DOWNLOAD_TIMEOUT))


@contextmanager
def patient_downloads(transfer: float):
    """huggingface_hub's file-transfer timeout (a module constant it reads per request) at `transfer`."""
    from huggingface_hub import constants

    before, constants.HF_HUB_DOWNLOAD_TIMEOUT = constants.HF_HUB_DOWNLOAD_TIMEOUT, transfer
    try:
        yield
    finally:
        constants.HF_HUB_DOWNLOAD_TIMEOUT = before


def download_model(name: str, kind: str, out_json: str | Path) -> dict:
    """Fetch a hub model's weights and tokenizer into HF_HOME and record its revision, local
    path and parameter count (which sizes the cluster jobs that use it)."""
    from huggingface_hub import constants, list_repo_files, snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    from .sizing import _count_from_config

    try:
        files = list_repo_files(name)
        metadata, transfer = timeouts()
        with patient_downloads(transfer):
            path = snapshot_download(name, allow_patterns=MODEL_FILES + weight_patterns(files),
                                     ignore_patterns=SKIP, etag_timeout=metadata)
    except GatedRepoError as err:
        raise HubError(gated_message(name)) from err
    except RepositoryNotFoundError as err:
        raise HubError(f"{name} is not a model that {constants.ENDPOINT} serves to this client: check the spelling in "
                       f"the config's models; a gated or private model needs HF_TOKEN set to a read token of an "
                       f"account with access (`export HF_TOKEN=hf_...`)") from err
    except LocalEntryNotFoundError as err:
        raise HubError(f"{name} could not be downloaded: the hub is not reachable from this machine and it is "
                       f"not in HF_HOME ({os.environ.get('HF_HOME', '~/.cache/huggingface')}); run the "
                       f"workflow where the hub is reachable, or copy the model into HF_HOME") from err
    except Exception as err:  # connection refused, timed out, DNS (the HTTP client's own error types)
        raise HubError(f"{name} could not be downloaded ({type(err).__name__}: {err}); run the workflow where "
                       f"the hub is reachable (HF_HUB_OFFLINE=0), or copy the model into HF_HOME") from err
    record = {"model": name, "revision": Path(path).name, "path": path,
              "n_params": _count_from_config(Path(path), kind)}
    atomic.write_json(out_json, record)
    return record


def read_marker(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
