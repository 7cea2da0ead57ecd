import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from grids import env
from lora_tsd.pipeline.config import ConfigError, check

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT = yaml.safe_load((ROOT / "config.yaml").read_text())


def _merged(*paths) -> dict:
    """config.yaml with --configfile files merged in, the way Snakemake merges them (recursively)."""
    from snakemake.utils import update_config

    cfg = copy.deepcopy(DEFAULT)
    for path in paths:
        update_config(cfg, yaml.safe_load((ROOT / path).read_text()))
    return cfg


# preset files -> (train, evaluate, validate, forgetting, forgetting_base, svd_cache) jobs of its whole DAG.
# train: settings x methods x ranks x seeds x train sets; evaluate: each cell on its train set's
# tasks (commonsense: 8 from one train set; GLUE: one per dataset); validate: a sweep's cells on
# the same tasks' validation rows (select_by score), none without a sweep; forgetting: every
# trained causal-LM cell once (a sweep: every candidate, as the tuned table may pick any), none for
# GLUE; forgetting_base: once per causal model; svd_cache: once per model and dtypes its SVD-reading
# cells load (LoRA-Dash in every preset; one model each, the hub smoke's two). The sweep variants
# train 3 settings (x0.5, x1, x2).
PRESETS = {
    ("configs/paper/commonsense.yaml", "configs/paper/commonsense-llama7b.yaml"): (18, 144, 0, 18, 1, 1),
    ("configs/paper/commonsense.yaml", "configs/paper/commonsense-llama3-8b.yaml"): (18, 144, 0, 18, 1, 1),
    ("configs/paper/glue-debertav3-base.yaml",): (72, 72, 0, 0, 0, 1),
    ("configs/paper/commonsense.yaml", "configs/paper/commonsense-llama7b.yaml",
     "configs/paper/commonsense-llama7b-sweep.yaml"): (54, 432, 432, 54, 1, 1),
    ("configs/paper/commonsense.yaml", "configs/paper/commonsense-llama3-8b.yaml",
     "configs/paper/commonsense-llama3-8b-sweep.yaml"): (54, 432, 432, 54, 1, 1),
    ("configs/paper/glue-debertav3-base.yaml", "configs/paper/glue-debertav3-base-sweep.yaml"): (216, 216, 216, 0, 0, 1),
    # the exploration: 6 adapter methods x 3 ranks + full fine-tuning once (it has no rank)
    ("configs/paper/commonsense.yaml", "configs/paper/commonsense-llama7b.yaml",
     "configs/paper/explore-llama7b.yaml"): (19, 152, 0, 19, 1, 1),
    # LoRA-Init beside LoRA-GA, CorDA and LoRA-One on the paper presets: 8 methods
    ("configs/paper/commonsense.yaml", "configs/paper/commonsense-llama7b.yaml",
     "configs/paper/init-baselines.yaml"): (48, 384, 0, 48, 1, 1),
    ("configs/paper/glue-debertav3-base.yaml", "configs/paper/init-baselines.yaml"): (192, 192, 0, 0, 0, 1),
    # the hub path in seconds (run through a served hub in tests/test_hub.py): 2 causal cells
    ("configs/hub-smoke.yaml",): (4, 6, 0, 2, 1, 2),
}


ROW = {"instruction": "Which is a mammal? Answer1: whale Answer2: shark", "input": "",
       "output": "the correct answer is answer1"}  # a Commonsense170K row


@pytest.fixture
def with_commonsense170k(tmp_path, monkeypatch):
    """A working directory holding the file the real-scale configs name (one row: the start-up
    check reads it)."""
    (tmp_path / "resources").mkdir()
    (tmp_path / "resources" / "commonsense_170k.json").write_text(json.dumps([ROW]))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("paths", [("config.yaml",), ("configs/smoke.yaml",), ("configs/baselines.yaml",),
                                   ("configs/hub-example.yaml",), ("configs/lr-sweep.yaml",),
                                   ("configs/explore.yaml",), ("configs/exact.yaml",), *PRESETS])
def test_shipped_configs_are_valid(paths, with_commonsense170k):
    check(_merged(*paths), SCHEMA)


def test_a_missing_local_train_data_file_names_the_key_and_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        check(_merged("configs/hub-example.yaml"), SCHEMA)
    msg = str(err.value)
    assert "train_data.commonsense170k" in msg and "'resources/commonsense_170k.json' does not exist" in msg


def test_a_missing_local_model_folder_names_the_key_and_path(tmp_path):
    msg = _error(models=["smollm2-135m-instruct", str(tmp_path / "no-such-model")])
    assert "models[1]" in msg and "local model folder" in msg and "no-such-model" in msg
    (tmp_path / "my-model").mkdir()
    check({**DEFAULT, "models": [str(tmp_path / "my-model"), "all-minilm-l6-v2"]}, SCHEMA)


@pytest.mark.e2e
@pytest.mark.parametrize("paths", list(PRESETS), ids=lambda p: Path(p[-1]).stem)
def test_paper_presets_build_their_whole_dag_without_network(paths, with_commonsense170k):
    """A dry run downloads nothing: with the hub allowed (as a preset needs), the DAG builds on
    this machine, which reaches no hub; with offline mode on, it stops before any job."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "-s", str(ROOT / "Snakefile"), "--directory",
           str(with_commonsense170k), "--configfile", *[str(ROOT / p) for p in paths]]
    offline = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert offline.returncode == 1 and "Job stats" not in offline.stdout
    assert "export HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0" in offline.stderr, offline.stderr[-2000:]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    stats = out.stdout.split("Job stats:")[1].split("total")[0]
    counts = {line.split()[0]: int(line.split()[1]) for line in stats.splitlines() if line.strip()[:1].isalpha()
              and line.split()[-1].isdigit()}
    assert (counts["train"], counts["evaluate"], counts.get("validate", 0), counts.get("forgetting", 0),
            counts.get("forgetting_base", 0), counts.get("svd_cache", 0)) == PRESETS[paths]


def test_glue_preset_gives_each_dataset_its_official_recipe():
    from lora_tsd.pipeline.config import cell_train

    cfg = _merged("configs/paper/glue-debertav3-base.yaml")
    cola = cell_train(cfg, "glue", "cola", "lora_dash")
    assert (cola["lr"], cola["epochs"], cola["max_length"], cola["batch_size"]) == (8.0e-4, 25, 64, 32)
    assert cola.get("steps") is None  # config.yaml's embedded-grid steps do not leak in
    mrpc = cell_train(cfg, "glue", "mrpc", "lora")
    assert mrpc["warmup_ratio"] == 0.1 and mrpc["epochs"] == 30


def test_an_override_of_steps_replaces_epochs_and_the_reverse():
    from lora_tsd.pipeline.config import merge_train

    assert merge_train({"epochs": 3, "lr": 1}, {"steps": 10}) == {"steps": 10, "lr": 1}
    assert merge_train({"steps": 10, "lr": 1}, {"epochs": 2}, {"lr": 2}) == {"epochs": 2, "lr": 2}


def test_train_length_must_be_given_exactly_once():
    msg = _error(train={**DEFAULT["train"], "epochs": 3})
    assert "both of steps and epochs" in msg and "train.steps" in msg
    msg = _error(train={**DEFAULT["train"], "steps": None})
    assert "neither of steps and epochs" in msg


def test_validation_options_need_held_out_rows():
    msg = _error(train={**DEFAULT["train"], "keep_best": True, "eval_every": 10})
    assert "train.keep_best" in msg and "train.eval_every" in msg and "val_size" in msg


def _error(**changes) -> str:
    cfg = copy.deepcopy(DEFAULT)
    for key, value in changes.items():
        cfg[key] = value
    with pytest.raises(ConfigError) as err:
        check(cfg, SCHEMA)
    return str(err.value)


def test_unknown_method_names_key_value_and_allowed():
    msg = _error(methods=["lora", "lorra"])
    assert "methods[1]" in msg and "'lorra'" in msg and "allowed values: " in msg
    from lora_tsd.methods.registry import METHODS

    assert all(name in msg.split("allowed values: ")[1] for name in METHODS)


def test_rank_zero_is_rejected():
    msg = _error(ranks=[4, 0])
    assert "ranks[1]" in msg and "0 is less than the minimum of 1" in msg


def test_unknown_task_lists_known_tasks():
    msg = _error(tasks=["arc_eesy"])
    assert "tasks[0]" in msg and "'arc_eesy'" in msg and "arc_easy" in msg and "winogrande" in msg


def test_unknown_model_lists_embedded_models_and_hub_ids():
    msg = _error(models=["gpt5"])
    assert "models[0]" in msg and "'gpt5'" in msg and "smollm2-135m-instruct" in msg and "hub id" in msg


def test_hub_ids_are_accepted_without_network():
    check({**DEFAULT, "models": ["HuggingFaceTB/SmolLM2-135M", "all-minilm-l6-v2"]}, SCHEMA)


def test_encoder_model_on_a_causal_task_is_rejected():
    msg = _error(models=["all-minilm-l6-v2"], tasks=["arc_easy"])
    assert "arc_easy" in msg and "causal" in msg and "encoder" in msg


def test_glue_on_a_causal_lm_and_ifeval_on_an_encoder_are_rejected():
    msg = _error(models=["smollm2-135m-instruct"], tasks=["arc_easy", "sst2"])
    assert "tasks[1]" in msg and "'sst2' (glue) needs an encoder model" in msg and "smollm2-135m-instruct (causal)" in msg
    msg = _error(models=["all-minilm-l6-v2"], tasks=["rte", "ifeval"])
    assert "tasks[1]" in msg and "'ifeval' (instruction) needs a causal model" in msg


def test_a_model_no_task_can_use_is_rejected():
    msg = _error(models=["smollm2-135m-instruct", "all-minilm-l6-v2"], tasks=["arc_easy"])
    assert "models[1]" in msg and "is an encoder model but no listed task needs one" in msg and "sst2" in msg


def test_hub_models_declare_their_kind():
    cfg = {**DEFAULT, "models": ["org/causal", "microsoft/deberta-v3-base"], "tasks": ["arc_easy", "cola"],
           "data_source": "hub", "model_kinds": {"microsoft/deberta-v3-base": "encoder"}}
    check(cfg, SCHEMA)
    msg = _error(models=["microsoft/deberta-v3-base"], tasks=["cola"], data_source="hub")
    assert "'cola' (glue) needs an encoder model" in msg and "model_kinds" in msg
    msg = _error(model_kinds={"org/unlisted": "encoder"})
    assert "model_kinds.org/unlisted" in msg
    msg = _error(model_kinds={DEFAULT["models"][0]: "decoder"})
    assert "model_kinds" in msg and "'decoder'" in msg and "causal" in msg


def test_task_without_an_offline_copy_needs_hub_data():
    msg = _error(tasks=["arc_easy", "cola"], models=["smollm2-135m-instruct", "all-minilm-l6-v2"])
    assert "tasks[1]" in msg and "'cola' has no embedded copy" in msg and "sst2" in msg and "data_source: hub" in msg


def test_family_overrides_train_data_and_protocols_are_checked():
    msg = _error(family_train={"glu": {"lr": 1e-3}, "glue": {"stepz": 3, "lr": 0}})
    assert "family_train.glu" in msg and "family_train.glue.stepz" in msg and "family_train.glue.lr" in msg
    msg = _error(train_data={"commonsense": "x.json"})
    assert "train_data.commonsense" in msg and "commonsense170k" in msg
    msg = _error(eval={**DEFAULT["eval"], "protocols": ["loglik", "bleu"]})
    assert "eval.protocols[1]" in msg and "'bleu'" in msg and "generative" in msg


def test_misspelt_key_and_bad_type_are_rejected():
    cfg = copy.deepcopy(DEFAULT)
    cfg["train"]["lr"] = "fast"
    cfg["seedz"] = [0]
    with pytest.raises(ConfigError) as err:
        check(cfg, SCHEMA)
    assert "train.lr" in str(err.value) and "'fast'" in str(err.value) and "seedz" in str(err.value)


def test_snakemake_rejects_bad_config_before_any_job(tmp_path):
    bad = {**DEFAULT, "methods": ["lorra"], "ranks": [0]}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    proc = subprocess.run(
        ["snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--cores", "1",
         "--configfile", str(tmp_path / "bad.yaml")],
        capture_output=True, text=True, env=env(), timeout=300,
    )
    assert proc.returncode != 0
    assert "methods[0]" in proc.stderr and "'lorra'" in proc.stderr and "lora_tsd, milora" in proc.stderr
    assert "ranks[0]" in proc.stderr
    assert not (tmp_path / "resources").exists() and not (tmp_path / "results").exists()


def test_method_train_overrides_are_checked():
    msg = _error(method_train={"fulll": {"lr": 1e-5}, "full": {"lr": -1, "bogus": 1}})
    assert "method_train.fulll" in msg and "'fulll'" in msg
    assert "method_train.full.bogus" in msg
    assert "method_train.full.lr" in msg and "-1" in msg


def test_dash_switch_after_the_last_step_is_rejected():
    cfg = copy.deepcopy(DEFAULT)
    cfg["tsd"]["dash_t"] = cfg["train"]["steps"]
    with pytest.raises(ConfigError) as err:
        check(cfg, SCHEMA)
    assert "tsd.dash_t" in str(err.value) and "never switch" in str(err.value)


def test_a_bad_dash_t_unit_names_the_key_and_the_allowed_values():
    msg = _error(tsd={**DEFAULT["tsd"], "dash_t_unit": "steps"})
    assert "tsd.dash_t_unit" in msg and "'steps'" in msg and "'step'" in msg and "'forward'" in msg


def test_forward_counted_dash_t_past_the_runs_forwards_is_rejected():
    """config.yaml: 60 steps of one forward; with 4 micro-batches a step, t = 100 forwards
    switches (after step 25), t = 240 (every forward of the run) never does."""
    train = {**DEFAULT["train"], "micro_batch_size": DEFAULT["train"]["batch_size"] // 4, "steps": 60}
    check({**DEFAULT, "train": train, "tsd": {**DEFAULT["tsd"], "dash_t": 100, "dash_t_unit": "forward"}}, SCHEMA)
    msg = _error(train=train, tsd={**DEFAULT["tsd"], "dash_t": 240, "dash_t_unit": "forward"})
    assert "tsd.dash_t" in msg and "240 forward calls" in msg and "never switch" in msg and "dash_t < 240" in msg
    check({**DEFAULT, "train": train, "tsd": {**DEFAULT["tsd"], "dash_t": 239, "dash_t_unit": "forward"}}, SCHEMA)


def test_the_default_dash_t_unit_leaves_a_grids_tsd_params_as_they_were():
    """The schema fills dash_t_unit: step into every grid; the params (and checkpoint
    fingerprints, stamps) leave it out, so a grid from before the option reruns nothing."""
    from snakemake.utils import validate

    from lora_tsd.pipeline.config import result_config, result_tsd

    cfg = copy.deepcopy(DEFAULT)
    validate(cfg, str(SCHEMA))
    assert cfg["tsd"]["dash_t_unit"] == "step"
    before = {k: v for k, v in cfg["tsd"].items() if k not in ("svd_cache", "dash_t_unit")}
    assert result_tsd(cfg["tsd"]) == before and result_config(cfg)["tsd"] == before
    assert result_tsd({**cfg["tsd"], "dash_t_unit": "forward"}) == {**before, "dash_t_unit": "forward"}
