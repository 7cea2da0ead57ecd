"""Baselines as rules: the run-folder contract (checked against its schema and the cell),
external methods in the config, and LoRA+ trained by transformers' Trainer in its own rule,
end to end beside a built-in method."""
import json
import subprocess

import pytest
import yaml

from lora_tsd.pipeline import config, contract
from lora_tsd.training import cell

from grids import ROOT, SMOKE
from grids import command as _cmd
from grids import env as _env
from grids import run as _snakemake

CELL = {"model": "tiny-llama", "train_set": "commonsense170k", "method": "mine", "rank": 4, "seed": 0}
LORA_PLUS = yaml.safe_load((ROOT / "configs" / "lora-plus.yaml").read_text())["external_methods"]


def _record(**changes):
    record = {**CELL, "trainable_params": 10, "steps": 2, "losses": [1.0, 0.5], "final_loss": 0.75,
              "train_time_s": 1.5, "peak_rss_mb": 100.0, "packages": {}, "git_commit": None}
    record.update(changes)
    return {k: v for k, v in record.items() if v is not ...}


def _folder(tmp_path, record, adapter=("adapter_config.json", "adapter_model.safetensors")):
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    for name in adapter:
        (run / "adapter" / name).write_text("{}")
    (run / "train.json").write_text(json.dumps(record))
    return run


def test_a_folder_that_meets_the_contract_passes(tmp_path):
    assert contract.check_run(_folder(tmp_path, _record()), CELL, "train_mine")["steps"] == 2


def test_a_full_model_folder_is_an_adapter_too(tmp_path):
    contract.check_run(_folder(tmp_path, _record(), adapter=("config.json", "model.safetensors")), CELL, "train")


@pytest.mark.parametrize("changes,named", [
    ({"train_time_s": ...}, "train.json field '<top level>': 'train_time_s' is a required property"),
    ({"peak_rss_mb": ...}, "train.json field 'peak_gpu_mem_mb or peak_rss_mb': missing"),
    ({"steps": "two"}, "train.json field 'steps': 'two' is not of type 'integer'"),
    ({"seed": 1}, "train.json field 'seed': 1, but this cell's is 0"),
])
def test_a_broken_record_names_the_field_and_the_rule(tmp_path, changes, named):
    with pytest.raises(contract.ContractError) as err:
        contract.check_run(_folder(tmp_path, _record(**changes)), CELL, "train_mine")
    assert named in str(err.value) and "rule 'train_mine'" in str(err.value)


@pytest.mark.parametrize("adapter,named", [
    ((), "adapter/: neither a peft adapter"),
    (("adapter_config.json",), "adapter/: a peft adapter_config.json without weights"),
])
def test_a_missing_adapter_is_named(tmp_path, adapter, named):
    with pytest.raises(contract.ContractError, match=named):
        contract.check_run(_folder(tmp_path, _record(), adapter=adapter), CELL, "train_mine")


def test_the_built_in_training_meets_the_contract(tmp_path, tokenizer, examples, train_cfg, monkeypatch):
    from lora_tsd.tiny import make_llama

    monkeypatch.setattr(cell.models, "load_causal_lm", lambda src, dtype=None: (make_llama(vocab_size=1000), tokenizer))
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    cell.run("tiny-llama", "unused", "commonsense170k", data, "lora_dash", 4, 0, {**train_cfg, "steps": 4},
             tmp_path / "run" / "adapter", tmp_path / "run" / "train.json", tsd_cfg={"dash_t": 2, "dash_s": 2})
    contract.check_run(tmp_path / "run", {**CELL, "method": "lora_dash"}, "train")


# --- the config

def _problems(cfg):
    with pytest.raises(config.ConfigError) as err:
        config.check(cfg)
    return str(err.value)


def test_an_undeclared_method_is_rejected_naming_the_allowed_ones():
    message = _problems({**SMOKE, "methods": ["lora", "lora_plus"]})
    assert "config key 'methods[1]': unknown value 'lora_plus'" in message
    message = _problems({**SMOKE, "methods": ["lora", "nope"], "external_methods": LORA_PLUS})
    assert "unknown value 'nope'" in message and "lora_plus" in message.split("allowed values:")[1]
    config.check({**SMOKE, "methods": ["lora", "lora_plus"], "external_methods": LORA_PLUS})


def test_an_external_method_may_not_shadow_a_built_in_or_name_a_missing_file():
    message = _problems({**SMOKE, "external_methods": {"lora": {"rule": "x"}, "mine": {"rule": "y", "smk": "no.smk"}}})
    assert "config key 'external_methods.lora': 'lora' is a built-in method" in message
    assert "config key 'external_methods.mine.smk': file 'no.smk' does not exist" in message


def _dry_run(tmp_path, cfg):
    return subprocess.run(_cmd(tmp_path, cfg) + ["-n"], capture_output=True, text=True, env=_env(), timeout=300)


def test_a_missing_or_unfit_rule_stops_before_any_job(tmp_path):
    (tmp_path / "mine.smk").write_text('rule train_mine:\n    output: "elsewhere/{seed}.json"\n    shell: "true"\n')
    cfg = {**SMOKE, "methods": ["lora", "mine", "theirs"],
           "external_methods": {"mine": {"rule": "train_mine", "smk": str(tmp_path / "mine.smk")},
                                "theirs": {"rule": "train_theirs"}}}
    proc = _dry_run(tmp_path, cfg)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "config key 'external_methods.theirs.rule': unknown value 'train_theirs'" in out
    assert "config key 'external_methods.mine.rule': rule 'train_mine' does not write" in out


# --- end to end

BROKEN = '''
rule train_broken:
    output:
        adapter=directory(external_run("broken") + "/adapter"),
        metrics=external_run("broken") + "/train.json",
    run:
        import json, os
        os.makedirs(output.adapter)
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            open(os.path.join(output.adapter, name), "w").write("{}")
        json.dump({"model": "tiny-llama", "train_set": wildcards.train_set, "method": "broken",
                   "rank": int(wildcards.rank), "seed": int(wildcards.seed), "trainable_params": 1,
                   "steps": 1, "losses": [1.0], "final_loss": 1.0, "peak_rss_mb": 1.0,
                   "packages": {}, "git_commit": None}, open(output.metrics, "w"))
'''


@pytest.mark.e2e
def test_lora_plus_trained_by_its_own_rule_joins_the_tables(tmp_path):
    cfg = {**SMOKE, "name": "external", "tasks": ["arc_easy", "sst2"], "methods": ["lora", "lora_plus"],
           "external_methods": LORA_PLUS}
    _snakemake(tmp_path, cfg)
    grid = tmp_path / "results" / "external"
    rows = [r for r in json.loads((grid / "leaderboard.json").read_text())["summary"] if r["method"] == "lora_plus"]
    assert {(r["model"], r["task"], r["protocol"]) for r in rows} == {
        ("tiny-llama", "arc_easy", "loglik"), ("tiny-llama", "arc_easy", "generative"), ("tiny-bert", "sst2", "glue")}
    assert all(r["mean"] is not None and r["seeds"] == 1 and r["trainable_params"] > 0 for r in rows)
    record = json.loads((grid / "runs/tiny-llama/commonsense170k/lora_plus/r4/s0/train.json").read_text())
    assert record["trainer"].startswith("transformers.Trainer") and record["steps"] == SMOKE["train"]["steps"]
    assert "lora_plus" in (grid / "leaderboard.md").read_text()


@pytest.mark.e2e
def test_a_rule_that_breaks_the_contract_fails_its_evaluation_naming_the_field(tmp_path):
    (tmp_path / "broken.smk").write_text(BROKEN)
    cfg = {**SMOKE, "name": "broken", "models": ["tiny-llama"], "tasks": ["arc_easy"], "methods": ["broken"],
           "external_methods": {"broken": {"rule": "train_broken", "smk": str(tmp_path / "broken.smk")}},
           "eval": {**SMOKE["eval"], "protocols": ["loglik"]}}
    proc = subprocess.run(_cmd(tmp_path, cfg), capture_output=True, text=True, env=_env(), timeout=900)
    assert proc.returncode != 0
    log = (tmp_path / "results/broken/runs/tiny-llama/commonsense170k/broken/r4/s0/eval/arc_easy.log").read_text()
    assert "'train_time_s' is a required property" in log and "rule 'train_broken'" in log
    assert not (tmp_path / "results/broken/runs/tiny-llama/commonsense170k/broken/r4/s0/eval/arc_easy.json").exists()
