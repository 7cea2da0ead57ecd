"""No silently ignored setting: every schema key has an entry saying where it is read (and where
it is inert); a key set where no cell reads it, a train_data entry the grid would not read or a
file it could not, and ranks or tsd.dash_s beyond a model's matrices stop the run before any
job, naming the key, the value and what is allowed."""
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from grids import SMOKE, env
from lora_tsd.data import prepare, train_files
from lora_tsd.pipeline import readers, shapes
from lora_tsd.pipeline.config import ConfigError, check

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT = yaml.safe_load((ROOT / "config.yaml").read_text())
ROWS = [{"instruction": "Which is a mammal? Answer1: whale Answer2: shark", "input": "",
         "output": "the correct answer is answer1"},
        {"instruction": "Is the sky blue?", "output": "the correct answer is true"}]


def _error(base=DEFAULT, **changes) -> str:
    cfg = copy.deepcopy(base)
    cfg.update(changes)
    with pytest.raises(ConfigError) as err:
        check(cfg, SCHEMA)
    return str(err.value)


def _ok(base=DEFAULT, **changes) -> None:
    cfg = copy.deepcopy(base)
    cfg.update(changes)
    check(cfg, SCHEMA)


# -- the schema walk -------------------------------------------------------------------------

def test_every_schema_key_says_where_it_is_read():
    keys = readers.schema_keys(yaml.safe_load(SCHEMA.read_text()))
    assert {"train.lr", "tsd.dash_s", "family_train.*", "external_methods.*.options",
            "forgetting.text.field", "cluster.model_params.*"} <= set(keys)
    missing = [k for k in keys if k not in readers.KEYS]
    assert not missing, f"schema keys without an entry in lora_tsd/pipeline/readers.py KEYS: {missing}"
    assert not [k for k in readers.KEYS if k not in keys]  # no entry for a key the schema lost
    assert all(entry.read for entry in readers.KEYS.values())
    # every train key's cells are known, and the train keys are exactly the schema's
    train = yaml.safe_load(SCHEMA.read_text())["properties"]["train"]["properties"]
    assert set(readers.TRAIN) == set(train)


def test_the_walk_fails_for_a_key_without_an_entry():
    schema = yaml.safe_load(SCHEMA.read_text())
    schema["properties"]["eval"]["properties"]["temperature"] = {"type": "number"}
    assert [k for k in readers.schema_keys(schema) if k not in readers.KEYS] == ["eval.temperature"]


# -- keys set where no cell reads them --------------------------------------------------------

@pytest.mark.parametrize("changes,expected", [
    (dict(family_train={"glue": {**DEFAULT["family_train"]["glue"], "train_on_inputs": True}}),
     ["config key 'family_train.glue.train_on_inputs': true, but none of the cells it reaches",
      "reads train_on_inputs: it is read by causal-LM train sets only",
      "allowed values: false (the default) or no train_on_inputs in family_train.glue"]),
    (dict(models=["all-minilm-l6-v2"], tasks=["sst2"], train={**DEFAULT["train"], "train_on_inputs": True}),
     ["config key 'train.train_on_inputs': true, but none of the cells it reaches (lora, lora_dash, lora_init, "
      "lora_tsd on sst2) reads train_on_inputs"]),
    (dict(train={**DEFAULT["train"], "val_batch_size": 8}),
     ["config key 'train.val_batch_size': 8", "it is read by cells with train.val_size > 0",
      "allowed values: no val_batch_size in train"]),
    (dict(family_train={"glue": {**DEFAULT["family_train"]["glue"], "eval_every": 5}}),
     ["config key 'family_train.glue.eval_every': 5, but none of the cells it reaches (lora, lora_dash, lora_init, "
      "lora_tsd on sst2, rte) reads eval_every: it is read by cells with train.val_size > 0; allowed values: null "
      "(the default) or no eval_every in family_train.glue"]),
    (dict(methods=["lora", "full"], method_train={"full": {**DEFAULT["method_train"]["full"], "lora_dropout": 0.2}}),
     ["config key 'method_train.full.lora_dropout': 0.2, but none of the cells it reaches (full on",
      "it is read by adapter methods (not full fine-tuning)"]),
    (dict(methods=["lora", "full"], method_sweep={"full": {"lora_dropout": [0.0, 0.1]}}),
     ["config key 'method_sweep.full.lora_dropout': [0.0, 0.1], but none of the cells it reaches (full on"]),
    (dict(train_set_train={"sst2": {"warmup_ratio": 0.1, "warmup_steps": 5}}),
     ["config key 'train_set_train.sst2.warmup_steps': 5", "it is read by cells without train.warmup_ratio"]),
    (dict(models=["all-minilm-l6-v2"], tasks=["sst2"], eval={**DEFAULT["eval"], "dtype": "float32"}),
     ["config key 'eval.dtype': float32, but this grid has no causal model (encoders score in float32)"]),
    (dict(sweep={"lr": ["x0.5", "x2"]}, selection={"select_by": "loss", "metric": {"commonsense": "loglik acc"}},
          train={**DEFAULT["train"], "val_size": 8}),
     ["config key 'selection.metric': {'commonsense': 'loglik acc'}, but selection.select_by is loss"]),
    (dict(data_source="hub", tasks=["arc_easy", "sst2"], split={"test_fraction": 0.3, "salt": "lora-tsd-v1"}),
     ["config key 'split.test_fraction': 0.3, but data_source is hub: the test rows are the hub's test splits",
      "allowed values: 0.4 (config.yaml's)"]),
    (dict(model_kinds={"smollm2-135m-instruct": "encoder"}),
     ["config key 'model_kinds.smollm2-135m-instruct': 'encoder', but smollm2-135m-instruct is an embedded causal "
      "model and knows its kind; allowed values: causal, or no entry"]),
])
def test_a_key_no_cell_reads_is_refused_naming_key_value_and_allowed(changes, expected):
    msg = _error(**changes)
    for part in expected:
        assert part in msg, msg


# A key for a kind of job the grid has none of is inert, not refused: nothing ignores it, and it
# applies once the grid has such a job, so a preset trimmed to fewer methods or tasks still runs.
@pytest.mark.parametrize("changes", [
    dict(methods=["lora"], tsd={**DEFAULT["tsd"], "dash_s": 16}),
    dict(method_train={**DEFAULT["method_train"], "dora": {"lr": 1.0e-4}}),
    dict(eval={**DEFAULT["eval"], "protocols": ["loglik", "glue", "ifeval"], "num_beams": 4}),
    dict(tasks=["arc_easy", "sst2"], eval={**DEFAULT["eval"], "ifeval_max_gen_toks": 256}),
    dict(selection={"val_rows": 30}),
    dict(sweep={"lr": ["x0.5", "x2"]}, tasks=["arc_easy", "sst2"],
         selection={"metric": {"instruction": "ifeval prompt_level_strict_acc"}}),
    dict(eval={**DEFAULT["eval"], "protocols": ["loglik", "glue", "ifeval"]}, tasks=["arc_easy", "ifeval"],
         models=["smollm2-135m-instruct"]),
    dict(forgetting={"enabled": False, "rows": 30}),
    dict(methods=["full"], target_modules={"smollm2-135m-instruct": ["q_proj"]}),
    {**SMOKE, "models": ["tiny-llama"], "methods": ["lora"], "tasks": ["arc_easy"]},  # smoke trimmed: its tsd, ifeval keys
])
def test_a_key_for_jobs_the_grid_lacks_is_inert(changes):
    _ok(**changes)


def test_values_every_grid_starts_from_are_never_refused():
    # a GLUE-only grid keeps config.yaml's generation and bf16 settings, read by no cell of it
    _ok(models=["all-minilm-l6-v2"], tasks=["sst2", "rte"])
    # a grid without TSD methods keeps config.yaml's tsd section
    _ok(methods=["lora", "dora"])
    _ok(model_kinds={"smollm2-135m-instruct": "causal"})  # its own kind: the same grid
    # a key read by some of the cells it reaches (base_dtype: the causal ones) is not refused
    _ok(train={**DEFAULT["train"], "base_dtype": "float32"})


# -- train_data --------------------------------------------------------------------------------

def _write(path: Path, rows) -> Path:
    path.write_text(json.dumps(rows))
    return path


def test_train_data_is_read_with_embedded_data(tmp_path):
    data = _write(tmp_path / "mine.json", ROWS)
    _ok(train_data={"commonsense170k": str(data)})  # accepted: it is read, not ignored
    assert prepare.train_set_origin("commonsense170k", "embedded", str(data)) == "hub"
    assert prepare.train_set_origin("alpaca", "embedded", "yahma/alpaca-cleaned") == "hub"
    manifest = prepare.build_train_set("commonsense170k", "embedded", tmp_path / "out", {}, str(data))
    rows = prepare.read_jsonl(tmp_path / "out" / "train.jsonl")
    assert manifest["n_train"] == 2 and manifest["how"].startswith(f"{data} (train split)")
    assert [r["instruction"] for r in rows] == [r["instruction"] for r in ROWS]
    assert rows[1]["input"] == "" and rows[0]["response"] == ROWS[0]["output"]
    # a JSON Lines file is read the same way
    lines = tmp_path / "mine.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    prepare.build_train_set("alpaca", "embedded", tmp_path / "alpaca", {}, str(lines))
    assert [r["output"] for r in prepare.read_jsonl(tmp_path / "alpaca" / "train.jsonl")] == [r["output"] for r in ROWS]


def test_a_hub_train_data_id_needs_the_hub_with_embedded_data():
    from lora_tsd.pipeline import hub

    cfg = {**DEFAULT, "train_data": {"alpaca": "yahma/alpaca-cleaned"}}
    assert hub.hub_needs(cfg)["datasets"] == ["train_data.alpaca: yahma/alpaca-cleaned"]
    assert "HF_DATASETS_OFFLINE" in hub.offline_problem(cfg, {"HF_DATASETS_OFFLINE": "1"})


def test_train_data_for_glue_is_refused_and_for_a_train_set_no_task_uses_is_inert(tmp_path):
    data = _write(tmp_path / "mine.json", ROWS)
    msg = _error(train_data={"sst2": str(data)})
    assert (f"config key 'train_data.sst2': '{data}' for GLUE's sst2, which always trains on its task's own train "
            f"split" in msg and "allowed keys: alpaca, commonsense170k" in msg)
    _ok(tasks=["arc_easy", "sst2"], train_data={"alpaca": str(data)})  # read once an ifeval task is in the grid


@pytest.mark.parametrize("text,expected", [
    ('[{"instruction": "a", "output": "b"},\n {"instruction": "c" "output": "d"}]',
     "not valid JSON (line 2 column 22: Expecting ',' delimiter)"),
    ('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": }\n',
     "not valid JSON or JSON Lines (line 2 column 32: Expecting value, row 1)"),
    ('[{"instruction": "a", "output": "b"}, {"instruction": "c", "input": ""}]',
     "row 1: field 'output' is missing (fields: instruction, input)"),
    ('[{"instruction": "a", "output": "b"}, {"instruction": "c", "output": 3}]',
     "row 1: field 'output' is int 3, not a string"),
    ('[{"instruction": " ", "output": "b"}]', "row 0: field 'instruction' is blank"),
    ('[{"instruction": "a", "output": "b", "input": ["x"]}]', "row 0: field 'input' is list ['x'], not a string"),
    ('[["a", "b"]]', 'row 0 is list ["a", "b"], not an object'),
    ('[]', "no rows"),
    ('{\n  "data": []\n}', "a JSON dict, not an array of rows"),
])
def test_a_train_data_file_that_cannot_be_read_is_refused_at_start_up(tmp_path, text, expected):
    bad = tmp_path / "mine.json"
    bad.write_text(text)
    msg = _error(train_data={"commonsense170k": str(bad)})
    assert f"config key 'train_data.commonsense170k': {bad}: {expected}" in msg, msg
    assert "allowed values: a JSON array (or JSON Lines) of objects with string fields 'instruction' and " \
           "'output'" in msg


def test_a_train_data_file_with_another_suffix_is_refused(tmp_path):
    bad = tmp_path / "mine.csv"
    bad.write_text("instruction,output\na,b\n")
    msg = _error(train_data={"commonsense170k": str(bad)})
    assert f"config key 'train_data.commonsense170k': {bad}: a .csv file; allowed values: a .json or .jsonl file" in msg


def test_the_data_job_refuses_bad_rows_before_writing(tmp_path, monkeypatch):
    bad = _write(tmp_path / "mine.json", [ROWS[0], {"instruction": "q"}])
    with pytest.raises(train_files.TrainDataError) as err:
        prepare.build_train_set("commonsense170k", "embedded", tmp_path / "out", {}, str(bad))
    assert str(err.value).startswith(f"train_data.commonsense170k: {bad}: row 1: field 'output' is missing")
    assert not (tmp_path / "out").exists()
    # a hub dataset's rows, read at the data job (nothing reads them at start-up)
    monkeypatch.setattr(prepare, "_hub_rows", lambda *a, **k: [ROWS[0], ROWS[1], {"output": "x", "input": ""}])
    with pytest.raises(train_files.TrainDataError) as err:
        prepare.build_train_set("alpaca", "hub", tmp_path / "hub", {}, "org/my-alpaca")
    assert str(err.value).startswith("train_data.alpaca: org/my-alpaca (train split): row 2: field 'instruction' "
                                     "is missing (fields: output, input)")
    assert not (tmp_path / "hub").exists()


# -- ranks and dash_s against the models' matrices --------------------------------------------

TINY = {**SMOKE, "models": ["tiny-llama", "tiny-bert"]}


def test_dash_s_beyond_a_known_models_matrices_is_refused():
    msg = _error(TINY, tsd={**SMOKE["tsd"], "dash_s": 100000})
    assert ("config key 'tsd.dash_s': 100000 directions dashed per matrix, but tiny-llama's smallest adapted matrix "
            "(model.layers.0.self_attn.q_proj, 64 x 64) has 64 directions (min(out, in)) (read by lora_dash, "
            "lora_tsd); allowed values: 1 to 64") in msg
    assert "tiny-bert's smallest adapted matrix (bert.encoder.layer.0.attention.self.query, 64 x 64)" in msg
    _ok(TINY, tsd={**SMOKE["tsd"], "dash_s": 64})
    msg = _error(TINY, method_sweep={"lora_dash": {"tsd.dash_s": [4, 128]}})
    assert "config key 'method_sweep.lora_dash.tsd.dash_s': 128 directions dashed per matrix" in msg
    msg = _error(TINY, method_sweep={"lora_dash": {"tsd.dash_s": ["x1", "x64"]}})  # 2 x 64
    assert "config key 'method_sweep.lora_dash.tsd.dash_s': 128 directions" in msg


def test_ranks_beyond_a_known_models_matrices_are_refused():
    msg = _error(ranks=[8, 100000])
    assert ("config key 'ranks[1]': rank 100000, but smollm2-135m-instruct's smallest adapted matrix "
            "(model.layers.0.self_attn.k_proj, 192 x 576) has 192 directions (min(out, in)); allowed values: "
            "1 to 192") in msg
    assert ("all-minilm-l6-v2's smallest adapted matrix (bert.encoder.layer.0.attention.self.query, 384 x 384) has "
            "384 directions") in msg and "ranks[0]" not in msg
    _ok(ranks=[192])
    msg = _error(ranks=[300])
    assert "config key 'ranks[0]': rank 300" in msg and "1 to 192" in msg and "1 to 384" not in msg
    # the model's own targets decide: q_proj alone is 576 x 576
    _ok(ranks=[300], target_modules={"smollm2-135m-instruct": ["q_proj"]})
    _ok(ranks=[100000], methods=["full"])  # full fine-tuning has no rank


def test_the_embedded_sizes_are_the_built_models():
    from lora_tsd.tiny import make_bert, make_llama

    for name, model in (("tiny-llama", make_llama()), ("tiny-bert", make_bert())):
        built = model.config.to_dict()
        assert {k: built[k] for k in shapes.EMBEDDED_CONFIGS[name]} == shapes.EMBEDDED_CONFIGS[name]
    for name, cfg in shapes.EMBEDDED_CONFIGS.items():
        folder = ROOT / "resources" / "models" / name / "config.json"
        if folder.is_file():  # built by a grid here: its config has these values
            built = json.loads(folder.read_text())
            assert {k: built.get(k) for k in cfg} == cfg


def test_the_smallest_matrix_is_the_one_peft_adapts():
    import torch
    from peft import LoraConfig, get_peft_model

    from lora_tsd.tiny import make_llama

    model = get_peft_model(make_llama(), LoraConfig(r=2, target_modules=["k_proj", "down_proj"]))
    adapted = {n: min(m.base_layer.weight.shape) for n, m in model.named_modules() if hasattr(m, "lora_A")}
    assert len(adapted) == 4 and min(adapted.values()) == 64
    name, rows, cols = shapes.smallest_matrix("tiny-llama", "causal", ["k_proj", "down_proj"])
    assert (name, rows, cols) == ("model.layers.0.self_attn.k_proj", 64, 64)
    assert torch.Size([rows, cols]) == model.base_model.model.model.layers[0].self_attn.k_proj.base_layer.weight.shape


def _fake_hub_model(cache: Path, name: str, config: dict) -> None:
    """huggingface_hub's cache layout for one downloaded file of `name` at revision main."""
    repo = cache / f"models--{name.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text(json.dumps(config))


def test_a_hub_model_is_checked_once_its_config_is_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = {**SMOKE, "models": ["org/small-llama", "tiny-bert"], "tsd": {**SMOKE["tsd"], "dash_s": 40}}
    check(cfg, SCHEMA)  # not downloaded: its sizes are not known at start-up
    assert shapes.problems(cfg, only=["org/small-llama"]) == []
    _fake_hub_model(tmp_path / "hub", "org/small-llama",
                    {"model_type": "llama", "hidden_size": 32, "intermediate_size": 96, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 500})
    expected = ("config key 'tsd.dash_s': 40 directions dashed per matrix, but org/small-llama's smallest adapted "
                "matrix (model.layers.0.self_attn.k_proj, 16 x 32) has 16 directions (min(out, in)) (read by "
                "lora_dash, lora_tsd); allowed values: 1 to 16")
    # the train job's check (workflow/scripts/train.py) and the next start-up say the same
    assert shapes.problems(cfg, only=["org/small-llama"]) == [expected]
    with pytest.raises(ConfigError) as err:
        check(cfg, SCHEMA)
    assert expected in str(err.value)
    assert "shapes.problems(snakemake.config, only=[snakemake.params.model_name])" in \
        (ROOT / "workflow" / "scripts" / "train.py").read_text()


def test_a_local_model_folder_is_checked_from_its_config(tmp_path):
    folder = tmp_path / "my-bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 48, "intermediate_size": 96,
                                                    "num_hidden_layers": 1, "num_attention_heads": 4,
                                                    "vocab_size": 100}))
    msg = _error(TINY, models=["tiny-llama", str(folder)], model_kinds={str(folder): "encoder"}, ranks=[50])
    assert (f"config key 'ranks[0]': rank 50, but {folder}'s smallest adapted matrix "
            f"(bert.encoder.layer.0.attention.self.query, 48 x 48) has 48 directions") in msg


# -- end to end: the workflow honours train_data with embedded data ---------------------------

@pytest.mark.e2e
def test_the_workflow_builds_the_train_set_from_the_named_file(tmp_path):
    """A dry run: the commonsense train set's job reads the named file (its input), not the
    carved task splits; a bad file stops the run before any job."""
    data = _write(tmp_path / "mine.json", ROWS)
    cfg = {**SMOKE, "train_data": {"commonsense170k": str(data)}}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "snakemake", "-n", "-p", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(tmp_path / "grid.yaml"), "--cores", "1", "--forcerun", "build_train_set"]
    out = subprocess.run(cmd + ["--until", "build_train_set"], capture_output=True, text=True, env=env(), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    jobs = out.stdout.split("rule build_train_set:")[1:]
    commonsense = [j for j in jobs if "/commonsense170k" in j.split("output:")[1].splitlines()[0]]
    assert len(commonsense) == 1 and f"input: {data}" in commonsense[0]
    data.write_text(json.dumps([ROWS[0], {"instruction": "q"}]))
    bad = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=300)
    assert bad.returncode == 1 and "Job stats" not in bad.stdout
    assert f"config key 'train_data.commonsense170k': {data}: row 1: field 'output' is missing" in bad.stderr
