import json
import os

import pytest

# Tests never touch the hub; loaded evaluate/lm-eval modules are cached under a temp HF_HOME.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True, scope="session")
def _hf_home(tmp_path_factory):
    os.environ["HF_HOME"] = str(tmp_path_factory.mktemp("hf_home"))


@pytest.fixture(scope="session")
def tokenizer():
    from lora_tsd.tiny import make_tokenizer

    return make_tokenizer()


@pytest.fixture
def tiny_model():
    from lora_tsd.tiny import make_llama

    return make_llama(vocab_size=1000, seed=0)


TRAIN_CFG = {
    "steps": 40, "batch_size": 4, "lr": 1e-2, "warmup_steps": 2, "weight_decay": 0.0,
    "max_length": 64, "lora_alpha_ratio": 2, "lora_dropout": 0.1, "checkpoint_every": 5,
}


@pytest.fixture
def train_cfg():
    return dict(TRAIN_CFG)


@pytest.fixture(scope="session")
def examples():
    """A small multiple-choice set with a learnable rule (the answer repeats the question's colour)."""
    colours = ["red", "blue", "green", "yellow"]
    out = []
    for i in range(24):
        c = colours[i % 4]
        choices = [colours[(k + i // 4) % 4] for k in range(4)]
        out.append({"query": f"Question: the sky is {c}. Which colour?\nAnswer:", "choices": choices,
                    "gold": choices.index(c)})
    return out


@pytest.fixture(scope="session")
def smoke_grid(tmp_path_factory):
    """configs/smoke.yaml run once per session in one workdir, shared by every test that reads
    a finished grid (tests/test_workflow.py, tests/test_slurm.py): (workdir, the run, the
    leaderboard as it was right after the run; later tests may run other grids in the workdir)."""
    import shutil

    from grids import SMOKE, run

    workdir = tmp_path_factory.mktemp("smoke_grid")
    proc = run(workdir, SMOKE, "smoke.yaml")
    frozen = workdir / "smoke-leaderboard.csv"
    shutil.copy(workdir / "results" / SMOKE["name"] / "leaderboard.csv", frozen)
    return workdir, proc, frozen


@pytest.fixture(scope="session")
def chromium():
    """Debian's chromium for the report checks (tests/browser.py); under CI=true a missing one fails."""
    from browser import find_chromium

    exe = find_chromium()
    missing = None
    if exe is None:
        missing = "no chromium on PATH (run tools/install-chromium.sh)"
    else:
        try:
            import playwright  # noqa: F401
        except ImportError:
            missing = "the playwright package is not installed (pip install -e '.[test]')"
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    return exe


@pytest.fixture
def data_dir(tmp_path, examples):
    """A folder holding `examples` as the train.jsonl a train set writes (cells read it)."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    return folder
