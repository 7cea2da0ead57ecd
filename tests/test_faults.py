"""Faults, each injected: divergence and a collapsed loss, out of memory, a full disk, and
determinism. Each has a defined outcome and loses nothing (corrupt state: test_train, test_tsd)."""
import json
import math
import os
import re
import subprocess
import uuid

import pytest
import torch

from lora_tsd import faults
from lora_tsd.aggregate import tables
from lora_tsd.evaluation import scoring
from lora_tsd.tiny import make_llama
from lora_tsd.training import cell, loop

TSD = {"dash_t": 3, "dash_s": 2, "svd_dtype": "float32"}


def _cell(tmp_path, tokenizer, examples, cfg, method="lora", monkeypatch=None, name="cell"):
    """train.run on the tiny Llama (built in-process) over `examples` written as a train set."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    (data_dir / "train.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    run_dir = tmp_path / name
    return cell.run("tiny-llama", "unused", "commonsense170k", data_dir, method, 4, 0, cfg, run_dir / "adapter",
                    run_dir / "train.json", tsd_cfg=TSD), run_dir


@pytest.fixture
def tiny_base(monkeypatch, tokenizer):
    monkeypatch.setattr(cell.models, "load_causal_lm", lambda src, dtype=None: (make_llama(vocab_size=1000), tokenizer))


# --- divergence

def test_a_non_finite_loss_stops_the_cell_and_is_recorded(tiny_base, tokenizer, examples, train_cfg, tmp_path,
                                                          monkeypatch):
    calls = {"n": 0}
    real = loop.batch_loss

    def poisoned(model, batch, fmt):  # step 4's loss overflows, as bf16 can on a GPU
        calls["n"] += 1
        loss = real(model, batch, fmt)
        return loss * float("nan") if calls["n"] == 4 else loss

    monkeypatch.setattr(loop, "batch_loss", poisoned)
    cfg = {**train_cfg, "steps": 10}
    metrics, run_dir = _cell(tmp_path, tokenizer, examples, cfg)
    assert metrics["diverged"]["step"] == 4 and math.isnan(metrics["diverged"]["loss"])
    assert metrics["diverged"]["last_finite_loss"] == metrics["losses"][-1] and len(metrics["losses"]) == 3
    assert all(math.isfinite(p.float().sum()) for p in _adapter_tensors(run_dir))  # the update was never applied
    assert metrics["loss_flag"] is None

    # its evaluation reports the divergence instead of a score ...
    record = scoring.run("tiny-llama", "unused", "arc_easy", tmp_path / "none.jsonl", run_dir / "adapter",
                         {"batch_size": 8, "limit": None, "protocols": ["loglik"]},
                         tmp_path / "eval.json", {"method": "lora", "rank": 4, "seed": 0, "train": metrics})
    assert record["results"] == {} and record["diverged"]["step"] == 4
    # ... and the table shows it in that cell's place, with no average over the tasks that remain
    ok = _eval_record(tmp_path / "ok.json", "piqa", 0.5, seed=0)
    base = _eval_record(tmp_path / "base.json", "arc_easy", 0.4, method="base")
    tables.write([tmp_path / "eval.json", ok, base], {}, {"commit": "c", "config_hash": "h", "data": "d"},
                 tmp_path / "lb.md", tmp_path / "lb.csv", tmp_path / "lb.json")
    md = re.sub(r" +", " ", (tmp_path / "lb.md").read_text())
    assert ("| tiny-llama | lora | 4 | 1 | diverged (step 4, seed 0) | diverged (step 4, seed 0) | 50.00 | 50.00 |"
            in md) and "avg" not in md and "generative" not in md


def _adapter_tensors(run_dir):
    from safetensors.torch import load_file

    return load_file(run_dir / "adapter" / "adapter_model.safetensors").values()


def _eval_record(path, task, acc, seed=None, method="lora", flag=None):
    rec = {"model": "tiny-llama", "task": task, "family": "commonsense", "train_set": "commonsense170k",
           "method": method, "results": {"loglik": {"metrics": {"acc": acc, "acc_norm": acc}, "n_test": 10}}}
    if method != "base":
        rec.update(rank=4, seed=seed, train={"trainable_params": 1, "steps": 3, "loss_flag": flag})
    path.write_text(json.dumps(rec))
    return path


def test_a_collapsed_full_fine_tuning_is_flagged_at_the_uniform_output_level(tiny_base, tokenizer, examples,
                                                                             train_cfg, tmp_path):
    cfg = {**train_cfg, "steps": 8, "lr": 1e6, "max_grad_norm": None, "lora_dropout": 0.0}
    metrics, _ = _cell(tmp_path, tokenizer, examples, cfg, method="full")
    assert metrics["diverged"] is None
    assert metrics["final_loss"] == pytest.approx(math.log(1000), rel=0.02)  # ln V: a uniform output
    assert metrics["loss_flag"] == "uniform_output"


def test_loss_flags():
    assert faults.loss_flag([2.0, 1.5, 1.0, 0.5]) is None
    assert faults.loss_flag([1.0, 1.1, 1.2, 1.3]) == "no_decrease"
    assert faults.loss_flag([7.4, 6.9, 6.91, 6.905], uniform_loss=math.log(1000)) == "uniform_output"


def test_a_flagged_method_is_marked_in_the_table(tmp_path):
    files = [_eval_record(tmp_path / "a.json", "piqa", 0.5, seed=0, flag="no_decrease"),
             _eval_record(tmp_path / "b.json", "piqa", 0.6, seed=1)]
    tables.write(files, {}, {"commit": "c", "config_hash": "h", "data": "d"}, tmp_path / "lb.md",
                 tmp_path / "lb.csv", tmp_path / "lb.json")
    md = (tmp_path / "lb.md").read_text()
    assert "| lora †" in md and "† The training loss did not learn: lora r4 seed 0: its last losses" in md


# --- out of memory

def test_out_of_memory_in_training_names_the_cell_s_levers(tiny_base, tokenizer, examples, train_cfg, tmp_path,
                                                           monkeypatch):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(cell, "fit", oom)
    with pytest.raises(faults.OutOfMemory) as err:
        _cell(tmp_path, tokenizer, examples, {**train_cfg, "micro_batch_size": 2})
    msg = str(err.value)
    assert "training tiny-llama/commonsense170k/lora/r4/s0" in msg
    assert "train.micro_batch_size (now 2)" in msg and "train.max_length (now 64)" in msg
    assert "Tried to allocate 2.00 GiB" in msg
    assert not (tmp_path / "cell" / "train.json").exists() and not (tmp_path / "cell" / "adapter").exists()


def test_out_of_memory_in_scoring_names_eval_batch_size(tmp_path, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(scoring, "score", oom)
    with pytest.raises(faults.OutOfMemory, match=r"eval.batch_size \(now 16\)"):
        scoring.run("tiny-llama", "unused", "arc_easy", tmp_path / "t.jsonl", None, {"batch_size": 16, "limit": 5},
                    tmp_path / "eval.json", {"method": "base"})
    assert not (tmp_path / "eval.json").exists()


# --- determinism

def test_the_same_cell_twice_gives_identical_losses_and_scores(tiny_base, tokenizer, examples, train_cfg, tmp_path):
    cfg = {**train_cfg, "steps": 6}
    first, dir1 = _cell(tmp_path, tokenizer, examples, cfg, method="lora_dash", name="one")
    second, dir2 = _cell(tmp_path, tokenizer, examples, cfg, method="lora_dash", name="two")
    assert first["losses"] == second["losses"] and first["grad_norms"] == second["grad_norms"]
    docs = [{"id": str(i), "question": e["query"].removeprefix("Question: ").removesuffix("\nAnswer:"),
             "choices": {"text": e["choices"], "label": list("ABCD")}, "answerKey": "ABCD"[e["gold"]]}
            for i, e in enumerate(examples)]
    test_file = tmp_path / "test.jsonl"
    test_file.write_text("".join(json.dumps(d) + "\n" for d in docs))
    cfg_eval = {"batch_size": 8, "limit": None, "protocols": ["loglik"]}
    scores = [scoring.run("tiny-llama", "unused", "arc_easy", test_file, d / "adapter", cfg_eval,
                          tmp_path / f"{d.name}.json", {"method": "lora_dash"})["results"] for d in (dir1, dir2)]
    assert scores[0] == scores[1] and scores[0]["loglik"]["n_test"] == len(docs)


# --- a full disk

@pytest.fixture
def small_disk(tmp_path):
    """A 16 KiB tmpfs (needs root, which CI and the development machines have)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(disk)], check=True)
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def _fill(disk):
    try:
        with open(disk / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 1024)
                f.flush()
    except OSError:  # full
        pass


def _visible(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.name != "filler")


def test_a_full_disk_leaves_no_partial_result_and_a_rerun_with_space_succeeds(small_disk, tiny_base, tokenizer,
                                                                              examples, train_cfg, tmp_path):
    cfg = {**train_cfg, "steps": 3, "checkpoint_every": 100}
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "train.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    run_dir = small_disk / "cell"

    def train_cell():
        return cell.run("tiny-llama", "unused", "commonsense170k", data_dir, "lora", 4, 0, cfg,
                        run_dir / "adapter", run_dir / "train.json", tsd_cfg=TSD)

    with pytest.raises(Exception, match="No space left"):  # OSError, or safetensors' error wrapping it
        train_cell()  # the adapter (~25 KB) does not fit
    assert _visible(small_disk) == ["cell"]  # no adapter, no train.json, no temp folder left behind

    docs = [{"id": "0", "question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "A"}]
    (tmp_path / "test.jsonl").write_text(json.dumps(docs[0]) + "\n")
    eval_cfg = {"batch_size": 8, "limit": None, "protocols": ["loglik"]}
    _fill(small_disk)
    with pytest.raises(OSError, match="No space left"):
        scoring.run("tiny-llama", "unused", "arc_easy", tmp_path / "test.jsonl", None, eval_cfg,
                    run_dir / "eval" / "arc_easy.json", {"method": "base"})
    ok = _eval_record(tmp_path / "ok.json", "arc_easy", 0.5, seed=0)
    with pytest.raises(OSError, match="No space left"):
        tables.write([ok], {}, {"commit": "c", "config_hash": "h", "data": "d"}, small_disk / "lb.md",
                     small_disk / "lb.csv", small_disk / "lb.json")
    assert _visible(small_disk) in (["cell"], ["cell", "cell/eval"])  # nothing a reader could take for finished

    (small_disk / "filler").unlink()
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    metrics = train_cell()
    assert len(metrics["losses"]) == 3 and (run_dir / "adapter" / "adapter_model.safetensors").exists()
    record = scoring.run("tiny-llama", "unused", "arc_easy", tmp_path / "test.jsonl", run_dir / "adapter",
                         eval_cfg, run_dir / "eval" / "arc_easy.json", {"method": "lora"})
    assert record["results"]["loglik"]["n_test"] == 1
    tables.write([run_dir / "eval" / "arc_easy.json"], {}, {"commit": "c", "config_hash": "h", "data": "d"},
                 small_disk / "lb.md", small_disk / "lb.csv", small_disk / "lb.json")
    assert (small_disk / "lb.md").read_text().startswith("# Leaderboard")
