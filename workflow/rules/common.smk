# Shared helpers: config checks (before any job), hub set-up, grid expansion, path helpers.
import functools
import hashlib
import json
import sys
from types import SimpleNamespace

from snakemake.utils import validate

from lora_tsd import models
from lora_tsd.data import general_text
from lora_tsd.data.prepare import train_set_origin
from lora_tsd.data.tasks import TASKS, TRAIN_SETS, train_sets_for
from lora_tsd.methods.registry import METHODS
from lora_tsd.pipeline import assets, hub, sweep
from lora_tsd.pipeline.codehash import code_hash as package_code_hash
from lora_tsd.pipeline.config import SCHEMA as CONFIG_SCHEMA
from lora_tsd.pipeline.config import (ConfigError, cell_train, check, external_rule_problems, known_methods,
                                      local_path, merge_train, result_config, result_eval, result_train, result_tsd,
                                      short_hash)


def _stop(message):
    sys.stderr.write(f"\n{message}\n\n")
    raise SystemExit(1)


# The schema ships with the package (workflow/schemas/ links to it), so a wheel install has it too.
try:
    check(config, CONFIG_SCHEMA, os.path.join(workflow.basedir, "config.yaml"))  # the config merged under every --configfile
except ConfigError as err:
    _stop(err)
validate(config, str(CONFIG_SCHEMA))  # also fills schema defaults

# Offline by default. A config that names hub models or data needs the hub once, for the local
# download rules; it stops here, before any job, if the environment says offline.
if hub.offline_problem(config):
    _stop(hub.offline_problem(config))
if not any(hub.hub_needs(config).values()):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# Scheduling order among ready jobs: assets, then training, then scoring. On a few cores the
# long training jobs start early and the run ends on short scoring jobs, not one core idle
# beside a last training job.
PRIORITY_ASSETS = 2
PRIORITY_TRAINING = 1

# Methods whose runs depend on the tsd options (a change there retrains only these).
TSD_METHODS = {name for name, m in METHODS.items() if m.option_group == "tsd"}
SLUGS = {models.slug(m): m for m in config["models"]}
WHEELS = {assets.wheel_stem(r): r for r in
          [assets.DATA_PACKAGE] + [s.package for s in models.EMBEDDED_MODELS.values() if s.package]
          + [t.package for t in general_text.TEXTS.values()]}
# Each model meets the tasks of its kind (a causal LM the commonsense and instruction tasks,
# an encoder GLUE); the config check made sure every task has a model of its kind.
PAIRS = [(slug, task) for slug, name in SLUGS.items() for task in config["tasks"]
         if TASKS[task].model_kind == models.kind(name, config["model_kinds"])]

# Grids coexist: a grid's cells, stages and tables live under results/<name>/; task data and
# train sets under a key of the settings that make them, so two grids never overwrite each
# other's files and grids with the same data settings share them.
# A sweep (config sweep, family_sweep, method_sweep) adds a {setting} folder to every cell
# ("lr=0.0005") and validation rows to every task; a grid without one keeps its paths and data.
SWEEP = sweep.active(config)
SELECT_BY = config["selection"].get("select_by", "score")
VAL_ROWS = config["selection"].get("val_rows", 60) if SWEEP else 0
GRID = f"results/{config['name']}"
DATA_KEY = f"{config['data_source']}-{short_hash([config['data_source'], config['split']] + ([VAL_ROWS] if VAL_ROWS else []))}"
RUN = GRID + "/runs/{model}/{train_set}/{method}/r{rank}" + ("/{setting}" if SWEEP else "") + "/s{seed}"


def data_dir(task):
    return f"resources/data/{DATA_KEY}/{task}"


def held_out_of(train_set):
    """The grid's tasks whose validation rows a sweep removes from a train set read whole (a hub
    or local Commonsense170K): part of its key, as they change its rows."""
    if not VAL_ROWS or TRAIN_SETS[train_set].family != "commonsense" or \
            train_set_origin(train_set, config["data_source"], config["train_data"].get(train_set)) == "tasks":
        return []
    return [t for t in config["tasks"] if TASKS[t].train_set == train_set]


def train_set_key(train_set):
    """A train set's folder key: the data key, plus its own source when train_data names one
    (and the tasks whose validation rows it lost)."""
    named, held = config["train_data"].get(train_set), held_out_of(train_set)
    return f"{DATA_KEY}-{short_hash(named if not held else [named, sorted(held)])}" if named or held else DATA_KEY


def train_set_dir(train_set):
    return f"resources/train_sets/{train_set_key(train_set)}/{train_set}"


wildcard_constraints:
    model="[^/]+",
    task="|".join(TASKS),
    train_set="|".join(TRAIN_SETS),
    method="|".join(known_methods(config)),  # built-in and external (the train rule takes built-in only)
    rank=r"\d+",
    seed=r"\d+",
    data="[^/]+",
    setting="[^/]+",


# Baselines trained by their own rule (config `external_methods`): such a rule writes the
# run-folder contract (lora_tsd/pipeline/contract.py) under external_run(<its method name>).
EXTERNAL = config["external_methods"]


def external_run(method):
    """A cell folder of `method` with {model}, {train_set}, {rank} and {seed} left as wildcards."""
    return RUN.replace("{method}", method)


def external_wildcards(wildcards, method):
    """An external rule's wildcards with its method filled in (for cell_options, train_params...)."""
    return SimpleNamespace(**dict(wildcards.items()), method=method)


def file_hash(path):
    """A script's bytes as a param (an external rule's code: an edit retrains its cells)."""
    return hashlib.sha256(open(os.path.join(workflow.basedir, path), "rb").read()).hexdigest()[:16]


def producer_rule(method):
    """The rule that writes a cell's run folder (named by the contract's errors)."""
    return EXTERNAL[method]["rule"] if method in EXTERNAL else "train"


def model_name(wildcards):
    return SLUGS[wildcards.model]


def model_source(wildcards):
    return models.source(model_name(wildcards))


def hub_marker(slug):
    return f"resources/hub/{slug}.json"


def model_input(wildcards):
    """The built folder of an embedded model, a local model folder the config names, or the
    download rule's record of a hub model (fetched once into HF_HOME, then loaded by name)."""
    name = model_name(wildcards)
    if local_path(name):
        return [name]
    return [hub_marker(wildcards.model)] if models.is_hub_id(name) else [models.source(name)]


def wheel_path(requirement):
    return f"resources/wheels/{assets.wheel_stem(requirement)}.whl"


def train_set_tasks(wildcards):
    """Task folders a train set is built from: its tasks' carved (or hub) train splits, unless
    it reads a shipped file or the config's `train_data` names its source (a local file named
    there is the input instead)."""
    name, named = wildcards.train_set, config["train_data"].get(wildcards.train_set)
    if wildcards.data != train_set_key(name):
        raise ValueError(f"{wildcards.data}/{name} is not a train set of this config (its key: {train_set_key(name)})")
    if train_set_origin(name, config["data_source"], named) != "tasks":
        # A local file the config names is an input: changing it rebuilds the set and retrains.
        files = {"train_data": named} if named and local_path(named) else {}
        return {**files, **{t: data_dir(t) for t in held_out_of(name)}}  # its rows rendering validation rows go
    return {t: data_dir(t) for t in TRAIN_SETS[name].tasks}


@functools.cache  # asked for by every job's params and inputs: one expansion per (train set, method)
def cell_settings(train_set, method):
    """A cell's sweep candidates: label -> the swept keys' values (one, the shared, without a sweep)."""
    return sweep.settings(config, TRAIN_SETS[train_set].family, train_set, method) if SWEEP else {None: {}}


def setting_values(wildcards):
    """The swept keys' values of a cell's {setting} folder ({} without a sweep; a stage, which
    candidates share, gets the shared setting)."""
    label = getattr(wildcards, "setting", None)
    if label is None:
        return {}
    known = cell_settings(wildcards.train_set, wildcards.method)
    if label not in known:
        raise ValueError(f"{label!r} is not a candidate of {wildcards.method} on {wildcards.train_set}; "
                         f"its candidates: {', '.join(known)}")
    return known[label]


def cell_options(wildcards):
    """train, then the family's, the train set's and the method's overrides, then the cell's
    sweep candidate, then the model's target modules (every option, result-neutral knobs included)."""
    cfg = cell_train(config, TRAIN_SETS[wildcards.train_set].family, wildcards.train_set, wildcards.method)
    cfg = merge_train(cfg, sweep.split(setting_values(wildcards))[0])
    targets = config["target_modules"].get(model_name(wildcards))
    return {**cfg, "target_modules": targets} if targets else cfg


def code_hash(entry, method=None):
    """The code hash a job's params carry (lora_tsd/pipeline/codehash.py); under the exact switch
    it names the switch too: the pinned kernels are code the job runs, so switching it reruns
    every job (off: the hash alone, as before the switch existed)."""
    return package_code_hash(entry, method) + ("+exact" if config.get("exact") else "")


def train_params(wildcards):
    """The cell's options that can change its result: a job's params, so a change reruns it."""
    return result_train(cell_options(wildcards))


def tsd_params(wildcards):
    """The tsd options of a TSD method's cell (svd_cache is where SVDs are kept: not a result;
    the script reads it from the config)."""
    if wildcards.method not in TSD_METHODS:
        return {}
    return result_tsd({**config["tsd"], **sweep.split(setting_values(wildcards))[1]})  # a sweep's tsd candidate


def train_code(wildcards):
    """Hash of the code a cell's training depends on (its method's own modules, not others')."""
    return code_hash("lora_tsd.training.cell", wildcards.method)


def eval_params():
    return result_eval(config["eval"])


@functools.cache
def shared_setting(train_set, method):
    """The label of a cell's shared setting (None without a sweep)."""
    return sweep.shared_label(config, TRAIN_SETS[train_set].family, train_set, method) if SWEEP else None


def grid_runs(pairs=None, shared_only=False):
    """(run folder, task) for every cell of the grid and each task of its (model, task) pairs
    (all of PAIRS by default; shared_only: the cells at the shared setting, today's
    leaderboard in a sweep grid)."""
    return [
        (RUN.format(model=m, train_set=TASKS[task].train_set, method=method, rank=rank, seed=seed,
                    setting=setting), task)
        for m, task in (PAIRS if pairs is None else pairs) for method in config["methods"]
        for setting in cell_settings(TASKS[task].train_set, method)
        if not shared_only or setting == shared_setting(TASKS[task].train_set, method)
        for rank in method_ranks(method) for seed in config["seeds"]
    ]


def grid_cells(split="eval", shared_only=False):
    """Every (cell, task) evaluation file of the grid (split "val": its validation scores)."""
    return [f"{run}/{split}/{task}.json" for run, task in grid_runs(shared_only=shared_only)]


def trains_weights(method):
    """A built-in method that trains every weight (full fine-tuning); external ones do not say."""
    return method in METHODS and METHODS[method].trains_weights


def method_ranks(method):
    """The ranks a method trains at: full fine-tuning has none, so it trains once (under the
    grid's smallest rank's folder), not once per rank."""
    return [min(config["ranks"])] if trains_weights(method) else config["ranks"]


def base_cells():
    return [f"{GRID}/runs/{m}/base/{task}.json" for m, task in PAIRS]


def svd_dir(model):
    """The model's SVD cache (tsd.svd_cache; workflow/scripts/train.py names the same folder)."""
    return f"resources/svd/{model}"


# Methods whose training reads SVDs of the original weights: LoRA-Dash's switch (and its
# ablations'), LoRA-Init's init (LoRA-TSD both), MiLoRA's init.
SVD_METHODS = TSD_METHODS | {"milora"}


def svd_input(wildcards):
    """The SVD stage's manifest for a cell that reads SVDs while it trains: an SVD method, or any
    cell that traces its change rates (train.analysis_every; full fine-tuning reads W0's SVD at
    its end); keyed by the weights' dtype as the cell loads them (encoders and full fine-tuning
    in float32) and the SVD's. Ancient: the manifest orders the jobs, its time changes no result.
    Other adapter cells read the cache in their end-of-run analysis only (not train time)."""
    if wildcards.method not in METHODS:
        return []
    options = cell_options(wildcards)
    if wildcards.method not in SVD_METHODS and not options.get("analysis_every"):
        return []
    encoder = models.kind(model_name(wildcards), config["model_kinds"]) == "encoder"
    base = "float32" if encoder or trains_weights(wildcards.method) else options["base_dtype"]
    svd = tsd_params(wildcards).get("svd_dtype", "float32")  # what make_context reads (float32 for non-TSD methods)
    return [ancient(f"{svd_dir(wildcards.model)}/{base}-{svd}.json")]


def stage_input(wildcards):
    stage = METHODS[wildcards.method].stage
    if stage is None:
        return []
    return [getattr(rules, stage).output[0].format(**dict(wildcards.items()))]
