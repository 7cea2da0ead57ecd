"""Sweeps as config: candidate expansion, labels, the shared setting, and the start-up checks."""
import copy
from pathlib import Path

import pytest
import yaml

from lora_tsd.pipeline import sweep
from lora_tsd.pipeline.config import ConfigError, check, merge_train

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = yaml.safe_load((ROOT / "config.yaml").read_text())


def _cfg(**changes) -> dict:
    cfg = copy.deepcopy(DEFAULT)
    cfg.update(changes)
    return cfg


def _error(**changes) -> str:
    with pytest.raises(ConfigError) as err:
        check(_cfg(**changes))
    return str(err.value)


def test_a_grid_without_a_sweep_has_one_unlabelled_setting():
    assert not sweep.active(DEFAULT)
    assert not sweep.active({**DEFAULT, "sweep": {}, "method_sweep": {"lora": {}}})  # empty entries name no key


def test_candidates_expand_in_config_order_with_the_shared_setting_added_last():
    cfg = _cfg(sweep={"lr": [1.0e-4, 2.0e-4]}, family_sweep={"glue": {"lr": [1.0e-3, 2.0e-3]}})
    # config.yaml's commonsense lr is 5e-4: not a candidate, so it is added (today's table needs it)
    assert sweep.settings(cfg, "commonsense", "commonsense170k", "lora") == {
        "lr=0.0001": {"lr": 1.0e-4}, "lr=0.0002": {"lr": 2.0e-4}, "lr=0.0005": {"lr": 5.0e-4}}
    assert sweep.shared_label(cfg, "commonsense", "commonsense170k", "lora") == "lr=0.0005"
    # GLUE's shared lr (family_train: 1e-3) is among its own candidates: nothing added
    assert list(sweep.settings(cfg, "glue", "sst2", "lora")) == ["lr=0.001", "lr=0.002"]
    assert sweep.shared_label(cfg, "glue", "sst2", "lora") == "lr=0.001"


def test_method_sweep_replaces_the_grid_candidates_and_labels_show_every_swept_key():
    cfg = _cfg(sweep={"lr": [1.0e-4]}, method_sweep={"lora_dash": {"lr": [3.0e-4], "lora_dropout": [0.0, 0.1]}},
               family_sweep={"glue": {"lr": [1.0e-3]}})
    dash = sweep.settings(cfg, "commonsense", "commonsense170k", "lora_dash")
    assert list(dash) == ["lora_dropout=0.0,lr=0.0003", "lora_dropout=0.1,lr=0.0003", "lora_dropout=0.05,lr=0.0005"]
    # lora sweeps lr only: its labels show what it sweeps
    assert list(sweep.settings(cfg, "commonsense", "commonsense170k", "lora")) == ["lr=0.0001", "lr=0.0005"]


def test_factors_scale_each_cells_own_value_and_share_one_label():
    cfg = _cfg(family_sweep={"glue": {"lr": ["x0.5", "x2.0"]}},
               train_set_train={"rte": {"lr": 1.2e-3}}, sweep={"batch_size": ["x2"]})
    rte = sweep.settings(cfg, "glue", "rte", "lora")
    assert rte == {"batch_size=x2.0,lr=x0.5": {"batch_size": 32, "lr": 6.0e-4},
                   "batch_size=x2.0,lr=x2.0": {"batch_size": 32, "lr": 2.4e-3},
                   "batch_size=x1.0,lr=x1.0": {"batch_size": 16, "lr": 1.2e-3}}
    assert list(sweep.settings(cfg, "glue", "sst2", "lora").values())[0] == {"batch_size": 32, "lr": 5.0e-4}
    assert sweep.shared_label(cfg, "glue", "sst2", "lora") == "batch_size=x1.0,lr=x1.0"
    # "x2" and "x2.0" are one factor; a value equal to the shared one is the shared setting
    assert list(sweep.settings(_cfg(method_sweep={"lora": {"lr": ["x1", "x2.0"]}}), "glue", "sst2", "lora")) == [
        "lr=x1.0", "lr=x2.0"]
    same = _cfg(method_sweep={"lora": {"steps": [20.0, 40]}})
    assert list(sweep.settings(same, "commonsense", "commonsense170k", "lora")) == ["steps=20.0", "steps=40"]
    assert sweep.shared_label(same, "commonsense", "commonsense170k", "lora") == "steps=20.0"
    check(cfg)  # a factor respects a more specific fixed value: no conflict


def test_a_setting_merges_over_the_cells_train_options():
    cfg = _cfg(method_sweep={"lora": {"steps": [5]}})
    values = sweep.settings(cfg, "commonsense", "commonsense170k", "lora")["steps=5"]
    assert merge_train({"epochs": 3, "lr": 1}, values) == {"steps": 5, "lr": 1}


@pytest.mark.parametrize("changes, expected", [
    ({"sweep": {"lr": []}}, "config key 'sweep.lr': [] should be non-empty"),
    ({"sweep": {"learning_rate": [1.0e-4]}}, "config key 'sweep.learning_rate': 'learning_rate' cannot be swept"),
    ({"sweep": {"checkpoint_every": [1, 2]}}, "cannot be swept (speed only"),
    ({"sweep": {"lr": [1.0e-4, 1.0e-4]}, "family_sweep": {"glue": {"lr": [1.0e-3]}}}, "lists a value twice"),
    ({"method_sweep": {"lora_dahs": {"lr": [1.0e-4]}}}, "config key 'method_sweep.lora_dahs': unknown value"),
    ({"family_sweep": {"nlu": {"lr": [1.0e-4]}}}, "config key 'family_sweep.nlu': unknown value 'nlu'"),
    ({"method_sweep": {"lora": {"lr": [-1.0]}}}, "config key 'method_sweep.lora.lr': candidate lr=-1.0: lr: -1.0 is"),
    ({"method_sweep": {"lora": {"lr": ["x0.5", 1.0e-3]}}}, "mixes factors and values"),
    ({"method_sweep": {"lora": {"base_dtype": ["x2"]}}}, "factors scale a number, but base_dtype is 'bfloat16'"),
    ({"method_sweep": {"lora": {"base_dtype": ["a/b"]}}}, "has a value with '/', ',' or '='"),
    ({"sweep": {"lr": [1.0e-4]}}, "config key 'family_train.glue.lr': fixes lr = 0.001, but sweep.lr would replace it"),
    ({"method_sweep": {"lora": {"lr": [1.0e-4]}}, "selection": {"select_by": "loss"}},
     "config key 'selection.select_by': 'loss' needs a validation loss"),
    ({"method_sweep": {"lora": {"lr": [1.0e-4]}}, "selection": {"select_by": "accuracy"}},
     "config key 'selection.select_by': 'accuracy' is not one of ['score', 'loss']"),
    ({"method_sweep": {"lora": {"lr": [1.0e-4]}}, "selection": {"metric": {"glue": "loglik acc"}}},
     "config key 'selection.metric.glue': 'loglik acc' is not a metric of glue; allowed values: glue accuracy"),
    ({"method_sweep": {"lora": {"lr": [1.0e-4]}}, "selection": {"metric": {"commonsense": "loglik accc"}}},
     "'loglik accc' is not a metric of commonsense; allowed values: loglik acc, loglik acc_norm, generative acc"),
    ({"method_sweep": {"lora": {"lr": ["x2", "x2.0"]}}}, "lists a value twice"),
    ({"method_sweep": {"vera": {"lr": [1.0e-4]}}}, "config key 'method_sweep.vera.lr': reaches no cell of this grid"),
    ({"family_sweep": {"instruction": {"lr": [1.0e-4]}}, "tasks": ["arc_easy", "sst2"]},
     "config key 'family_sweep.instruction.lr': reaches no cell"),
    ({"method_sweep": {"lora": {"tsd.dash_s": [4]}}}, "config key 'method_sweep.lora.tsd.dash_s': reaches no cell"),
    ({"method_sweep": {"lora_dash": {"tsd.dash_t": ["x4"]}}}, "makes the fraction 0.25 into 1.0, a count of steps"),
    ({"method_sweep": {"lora": {"lr": [1.0e-4], "max_length": [64]}}, "selection": {"select_by": "loss"},
      "train": {**DEFAULT["train"], "val_size": 8}}, "candidates differ in ['max_length'], which change what the loss"),
])
def test_bad_sweeps_are_refused_naming_the_key_and_what_is_allowed(changes, expected):
    msg = _error(**changes)
    assert expected in msg, msg
    assert "allowed values" in msg or "should be" in msg or "is not one of" in msg or "is less" in msg


def test_method_train_conflicts_only_where_the_method_is_in_the_grid():
    cfg = _cfg(sweep={"lr": [1.0e-4]}, family_sweep={"glue": {"lr": [1.0e-3]}})
    check(cfg)  # method_train.full.lr exists, but full is not in the grid
    msg = _error(**{**cfg, "methods": ["lora", "full"],
                    "method_train": {"full": {"lr": 2.0e-5, "base_dtype": "float32"}}})
    assert "config key 'method_train.full.lr': fixes lr = 2e-05, but sweep.lr" in msg
    assert "method_sweep.full.lr" in msg
    check({**cfg, "methods": ["lora", "full"], "method_sweep": {"full": {"lr": [1.0e-5, 2.0e-5]}},
           "method_train": {"full": {"lr": 2.0e-5, "base_dtype": "float32"}}})


def test_shipped_sweep_configs_are_valid():
    from snakemake.utils import update_config

    cfg = copy.deepcopy(DEFAULT)
    update_config(cfg, yaml.safe_load((ROOT / "configs" / "lr-sweep.yaml").read_text()))
    check(cfg)
    assert sweep.active(cfg)


def test_tsd_options_sweep_only_the_methods_that_read_them():
    cfg = _cfg(sweep={"tsd.dash_s": [4, 16]}, method_sweep={"lora_dash": {"tsd.dash_t": [0.5]}})
    assert list(sweep.settings(cfg, "commonsense", "commonsense170k", "lora_dash")) == [
        "tsd.dash_s=4,tsd.dash_t=0.5", "tsd.dash_s=16,tsd.dash_t=0.5", "tsd.dash_s=8,tsd.dash_t=0.25"]
    assert sweep.split({"lr": 1.0, "tsd.dash_s": 4}) == ({"lr": 1.0}, {"dash_s": 4})
    # plain LoRA reads no tsd option: one cell, not three identical ones
    assert sweep.settings(cfg, "commonsense", "commonsense170k", "lora") == {"shared": {}}
    check(cfg)


@pytest.mark.parametrize("changes, expected", [
    ({"sweep": {"tsd.dash_s": [0, 8]}}, "config key 'sweep.tsd.dash_s': candidate tsd.dash_s=0: tsd.dash_s: 0 is less"),
    ({"sweep": {"tsd.svd_cache": [True, False]}}, "config key 'sweep.tsd.svd_cache': 'tsd.svd_cache' cannot be swept"),
    ({"method_sweep": {"lora_dash": {"tsd.dash_t": [30]}}}, "dash_t 30 is not below its steps (20), so lora_dash"),
])
def test_bad_tsd_sweeps_are_refused(changes, expected):
    msg = _error(**changes)
    assert expected in msg, msg


def test_selection_must_read_a_protocol_the_grid_scores():
    msg = _error(method_sweep={"lora": {"lr": [1.0e-4]}}, eval={**DEFAULT["eval"], "protocols": ["generative", "glue",
                                                                                                 "ifeval"]})
    assert "config key 'selection.metric.commonsense': selection reads 'loglik'" in msg and "generative" in msg
    check(_cfg(method_sweep={"lora": {"lr": [1.0e-4]}}, selection={"metric": {"commonsense": "generative acc"}},
               eval={**DEFAULT["eval"], "protocols": ["generative", "glue", "ifeval"]}))


def test_a_family_needs_one_set_of_candidates_and_a_stage_keeps_its_inputs():
    glue = {"tasks": ["sst2", "rte"], "models": ["all-minilm-l6-v2"], "methods": ["lora", "eva"],
            "train_set_train": {"rte": {"lr": 2.0e-3}}}
    msg = _error(**glue, method_sweep={"lora": {"lr": [5.0e-4]}})
    assert "config key 'method_sweep.lora': its candidates differ between the train sets of glue" in msg
    assert "factors of each train set's own value" in msg
    check(_cfg(**glue, method_sweep={"lora": {"lr": ["x0.5", "x2"]}}))  # factors: one label set
    msg = _error(**glue, method_sweep={"eva": {"max_length": [64, 128]}})
    assert "['max_length'] would change what eva's stage (eva_init) computes" in msg
    check(_cfg(**glue, method_sweep={"eva": {"lr": ["x0.5", "x2"]}}))


def test_a_grid_default_can_be_scaled_by_factors():
    # max_grad_norm is not in config.yaml: its schema default (1.0) is what the factors scale
    cfg = _cfg(sweep={"max_grad_norm": ["x0.5"]})
    check(cfg)
