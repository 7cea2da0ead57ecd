"""Config checks that run before any job: every error names the key, the bad value and
what is allowed."""
from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml

from . import models
from .methods import METHODS
from .tasks import TASKS

SCHEMA = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    pass


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _schema_problems(config: dict, schema: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"config key '{_key(e.absolute_path)}': {e.message}"
        for e in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    ]


def _unknown(key: str, value, allowed) -> str:
    return f"config key '{key}': unknown value {value!r}; allowed values: {', '.join(allowed)}"


def _registry_problems(config: dict) -> list[str]:
    problems = []
    for i, name in enumerate(config.get("methods", [])):
        if name not in METHODS:
            problems.append(_unknown(f"methods[{i}]", name, sorted(METHODS)))
    train_keys = set(config.get("train", {})) | {"target_modules", "checkpoint_every"}
    for name, overrides in (config.get("method_train") or {}).items():
        if name not in METHODS:
            problems.append(_unknown(f"method_train.{name}", name, sorted(METHODS)))
        for key in overrides if isinstance(overrides, dict) else []:
            if key not in train_keys:
                problems.append(_unknown(f"method_train.{name}.{key}", key, sorted(train_keys)))
    for i, name in enumerate(config.get("tasks", [])):
        if name not in TASKS:
            problems.append(_unknown(f"tasks[{i}]", name, sorted(TASKS)))
    for i, name in enumerate(config.get("models", [])):
        if not (name in models.EMBEDDED_MODELS or models.is_hub_id(name)):
            allowed = sorted(models.EMBEDDED_MODELS) + ["a hub id such as 'org/name'"]
            problems.append(_unknown(f"models[{i}]", name, allowed))
    for model in config.get("models", []):
        for task in config.get("tasks", []):
            if task in TASKS and (model in models.EMBEDDED_MODELS or models.is_hub_id(model)):
                need, have = TASKS[task].model_kind, models.kind(model)
                if need != have:
                    problems.append(
                        f"config keys 'tasks'/'models': task {task!r} needs a {need} model, "
                        f"but {model!r} is a {have} model"
                    )
    return problems


def _consistency_problems(config: dict) -> list[str]:
    problems = []
    dashing = {"lora_dash", "lora_tsd"} & set(config.get("methods", []))
    steps = config.get("train", {}).get("steps")
    t = config.get("tsd", {}).get("dash_t", 100)
    if dashing and isinstance(steps, int) and isinstance(t, (int, float)) and t >= 1 and t >= steps:
        problems.append(
            f"config key 'tsd.dash_t': {t} is not below train.steps ({steps}), so {sorted(dashing)} would "
            f"never switch; allowed values: 0 <= dash_t < {steps}, or a fraction below 1"
        )
    return problems


def _override_problems(config: dict, schema: dict) -> list[str]:
    """Each method's train overrides, merged over `train`, must still satisfy the schema."""
    problems = []
    train_schema = schema["properties"]["train"]
    for name, overrides in (config.get("method_train") or {}).items():
        if isinstance(overrides, dict) and isinstance(config.get("train"), dict):
            merged = {**config["train"], **overrides}
            for e in jsonschema.Draft202012Validator(train_schema).iter_errors(merged):
                problems.append(f"config key 'method_train.{name}.{_key(e.absolute_path)}': {e.message}")
    return problems


def check(config: dict, schema_path: str | Path = SCHEMA) -> None:
    """Raise ConfigError listing every problem; return None when the config is usable."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    problems = _schema_problems(config, schema) + _registry_problems(config) + _override_problems(config, schema)
    if not problems:
        problems = _consistency_problems(config)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def load(path: str | Path) -> dict:
    return yaml.safe_load(Path(path).read_text())
