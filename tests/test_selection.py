"""A sweep's selection on synthetic validation and test records: it reads validation scores
only, breaks ties by a documented rule, and leaves out incomplete or diverged candidates."""
import json

import pandas as pd
import pytest

from lora_tsd.aggregate import selection


def _record(path, *, method, setting, seed, task, acc, family="commonsense", protocol="loglik", split="val",
            diverged=None, n=20):
    hits = round(acc * n)
    rec = {"model": "tiny-llama", "family": family, "train_set": "commonsense170k", "task": task,
           "method": method, "rank": 4, "seed": seed, "setting": setting, "setting_values": {"lr": float(setting[3:])},
           "split": split, "diverged": diverged,
           "results": {} if diverged else {protocol: {
               "metrics": {"acc": hits / n, "acc_stderr": 0.1}, "n_test": n,
               "items": {"doc_id": list(range(n)), "doc_hash": [f"{split}{task}{i}" for i in range(n)],
                         "acc": [1.0] * hits + [0.0] * (n - hits)}}}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))
    return str(path)


SETTINGS = {"order": {("commonsense", "lora"): ["lr=0.0001", "lr=0.0005", "lr=0.001"]},
            "shared": {("commonsense", "lora"): "lr=0.0005"}, "seeds": [0, 1],
            "tasks": {"commonsense": ["arc_easy", "piqa"]}}


def _grid(tmp_path, val: dict, test: dict | None = None, seeds=(0, 1), tasks=("arc_easy", "piqa")):
    """Validation (and test) records of lora at each setting -> accuracy (same on every task and seed)."""
    files = {"val": [], "test": []}
    for split, scores in (("val", val), ("test", test or {})):
        for setting, acc in scores.items():
            for seed in seeds:
                for task in tasks:
                    files[split].append(_record(tmp_path / split / setting / f"s{seed}" / f"{task}.json",
                                                method="lora", setting=setting, seed=seed, task=task, acc=acc,
                                                split=split))
    return files


def _select(files, settings=SETTINGS, select_by="score", out=None):
    scores = selection.score_rows(files)
    cands = selection.candidates(scores, settings["seeds"], settings["tasks"])
    return selection.select(cands, settings["order"], settings["shared"], lower_is_better=select_by == "loss"), cands


def test_a_candidate_best_on_test_but_worst_on_validation_is_not_chosen(tmp_path):
    files = _grid(tmp_path, val={"lr=0.0001": 0.9, "lr=0.0005": 0.5, "lr=0.001": 0.2},
                  test={"lr=0.0001": 0.2, "lr=0.0005": 0.5, "lr=0.001": 0.95})
    chosen, cands = _select(files["val"])
    assert list(chosen.setting) == ["lr=0.0001"]
    assert cands.set_index("setting")["score"].to_dict() == pytest.approx(
        {"lr=0.0001": 90.0, "lr=0.0005": 50.0, "lr=0.001": 20.0})
    # The selection reads validation records only: a test record given to it is refused
    with pytest.raises(ValueError, match="is not a validation record"):
        selection.score_rows(files["test"][:1] + files["val"])


def test_selection_is_the_same_whatever_the_test_scores_say(tmp_path):
    files = _grid(tmp_path, val={"lr=0.0001": 0.3, "lr=0.0005": 0.6, "lr=0.001": 0.4},
                  test={"lr=0.0001": 0.9, "lr=0.0005": 0.1, "lr=0.001": 0.5})
    before = _select(files["val"])[0]
    _grid(tmp_path, val={}, test={"lr=0.0001": 0.0, "lr=0.0005": 1.0, "lr=0.001": 0.0})  # rewrite every test record
    assert _select(files["val"])[0].equals(before) and list(before.setting) == ["lr=0.0005"]


def test_ties_go_to_the_shared_setting_else_to_the_first_listed(tmp_path):
    files = _grid(tmp_path, val={"lr=0.0001": 0.6, "lr=0.0005": 0.6, "lr=0.001": 0.6})
    assert list(_select(files["val"])[0].setting) == ["lr=0.0005"]
    files = _grid(tmp_path / "b", val={"lr=0.0001": 0.5, "lr=0.0005": 0.4, "lr=0.001": 0.5})
    assert list(_select(files["val"])[0].setting) == ["lr=0.0001"]


def test_a_candidate_missing_a_seed_or_task_or_diverged_is_left_out(tmp_path):
    files = _grid(tmp_path, val={"lr=0.0005": 0.5, "lr=0.001": 0.4})
    files["val"] += _grid(tmp_path / "one-seed", val={"lr=0.0001": 0.99}, seeds=(0,))["val"]
    chosen, cands = _select(files["val"])
    assert list(chosen.setting) == ["lr=0.0005"]
    assert cands.set_index("setting")["status"].to_dict() == {"lr=0.0005": "ok", "lr=0.001": "ok",
                                                              "lr=0.0001": "missing"}
    gone = _record(tmp_path / "d.json", method="lora", setting="lr=0.0005", seed=0, task="arc_easy", acc=0,
                   diverged={"step": 3})
    chosen, cands = _select([f for f in files["val"] if "lr=0.0005/s0/arc_easy" not in f] + [gone])
    assert list(chosen.setting) == ["lr=0.001"]
    assert cands.set_index("setting").loc["lr=0.0005", "status"] == "diverged"


def test_selection_by_validation_loss_takes_the_lowest_at_the_kept_step(tmp_path):
    labels, files = {}, []
    for setting, losses, kept in (("lr=0.0001", [[2, 1.0], [4, 0.9]], None), ("lr=0.0005", [[2, 0.5], [4, 0.8]], 2),
                                  ("lr=0.001", [[2, 0.7], [4, 0.6]], None)):
        for seed in (0, 1):
            path = tmp_path / setting / f"s{seed}" / "train.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps({"model": "m", "method": "lora", "rank": 4, "seed": seed,
                                        "train_set": "commonsense170k", "val_losses": losses, "kept_step": kept}))
            labels[str(path)] = ("commonsense", setting, {"lr": 0})
            files.append(str(path))
    scores = selection.loss_rows(files, labels)
    cands = selection.candidates(scores, [0, 1], {"commonsense": ["commonsense170k"]})
    chosen = selection.select(cands, SETTINGS["order"], SETTINGS["shared"], lower_is_better=True)
    assert list(chosen.setting) == ["lr=0.0005"]  # 0.5 at its kept step 2, not its last 0.8
    assert cands.set_index("setting")["score"].to_dict() == pytest.approx(
        {"lr=0.0001": 0.9, "lr=0.0005": 0.5, "lr=0.001": 0.6})


def test_write_records_the_rule_every_candidate_and_the_choice(tmp_path):
    files = _grid(tmp_path, val={"lr=0.0001": 0.3, "lr=0.0005": 0.6, "lr=0.001": 0.4})
    scores = selection.score_rows(files["val"])
    record = selection.write(scores, SETTINGS, tmp_path / "selection.json", tmp_path / "selection.csv", "score",
                             selection.summary_by_setting(files["val"]))
    assert [s["setting"] for s in record["selections"]] == ["lr=0.0005"]
    assert "shared setting" in record["rule"]
    table = pd.read_csv(tmp_path / "selection.csv")
    assert table.set_index("setting")[["selected", "shared"]].to_dict("index") == {
        "lr=0.0001": {"selected": False, "shared": False}, "lr=0.0005": {"selected": True, "shared": True},
        "lr=0.001": {"selected": False, "shared": False}}
    val = pd.DataFrame(record["validation"])
    avg = val[(val.task == "avg") & (val.metric == "acc")].set_index("setting")
    assert avg["mean"].to_dict() == pytest.approx({"lr=0.0001": 30.0, "lr=0.0005": 60.0, "lr=0.001": 40.0})
    assert (avg["ci_low"] <= avg["mean"]).all() and (avg["ci_high"] >= avg["mean"]).all()


def test_family_scores_average_the_selection_metric_as_selection_does():
    row = {"family": "glue", "protocol": "glue", "model": "m", "method": "lora", "rank": 4, "setting": "lr=0.01",
           "std": 0.0, "seeds": 2}
    mixed = pd.DataFrame([{**row, "task": "cola", "metric": "matthews_correlation", "mean": 40.0},
                          {**row, "task": "sst2", "metric": "accuracy", "mean": 80.0},
                          {**row, "task": "sst2", "metric": "f1", "mean": 10.0}])
    out = selection.family_scores(mixed)
    assert out["mean"].tolist() == [60.0] and "ci_low" not in out  # each task's first metric, no CI
    shared = pd.DataFrame([{**row, "task": t, "metric": "accuracy", "mean": m, "ci_low": m - 5, "ci_high": m + 5}
                           for t, m in (("sst2", 80.0), ("rte", 60.0), ("avg", 70.0))])
    out = selection.family_scores(shared)
    assert out[["mean", "ci_low", "ci_high"]].values.tolist() == [[70.0, 65.0, 75.0]]  # the 'avg' row, with its CI
