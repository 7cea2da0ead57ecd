"""The shipped GLUE metric module, loaded by path through `evaluate` (conftest sets HF_HUB_OFFLINE=1
and a temp HF_HOME), against hand-computed and sklearn/scipy references."""
import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from lora_tsd.evaluation import metrics

PREDS = [1, 0, 1, 1, 0, 1, 0, 0, 1, 1]
REFS = [1, 0, 0, 1, 0, 1, 1, 0, 1, 0]
# Confusion matrix of PREDS against REFS (positive class 1): tp=4, tn=3, fp=2, fn=1.
TP, TN, FP, FN = 4, 3, 2, 1


def test_confusion_counts_are_what_the_hand_values_assume():
    p, r = np.array(PREDS), np.array(REFS)
    assert [((p == 1) & (r == 1)).sum(), ((p == 0) & (r == 0)).sum(),
            ((p == 1) & (r == 0)).sum(), ((p == 0) & (r == 1)).sum()] == [TP, TN, FP, FN]


@pytest.mark.parametrize("task", ["sst2", "rte", "qnli", "wnli", "mnli", "mnli_matched", "mnli_mismatched"])
def test_accuracy_tasks(task):
    result = metrics.load_glue(task).compute(predictions=PREDS, references=REFS)
    assert set(result) == {"accuracy"}
    assert result["accuracy"] == pytest.approx((TP + TN) / len(REFS))  # 0.7


def test_mnli_three_classes():
    result = metrics.load_glue("mnli_matched").compute(predictions=[0, 1, 2, 2, 1, 0], references=[0, 1, 2, 1, 1, 2])
    assert result == {"accuracy": pytest.approx(4 / 6)}


@pytest.mark.parametrize("task", ["mrpc", "qqp"])
def test_accuracy_and_f1(task):
    result = metrics.load_glue(task).compute(predictions=PREDS, references=REFS)
    assert set(result) == {"accuracy", "f1"}
    precision, recall = TP / (TP + FP), TP / (TP + FN)
    f1 = 2 * precision * recall / (precision + recall)  # 2*4 / (2*4 + 2 + 1) = 8/11
    assert f1 == pytest.approx(8 / 11)
    assert result["accuracy"] == pytest.approx(0.7)
    assert result["f1"] == pytest.approx(f1)
    assert result["f1"] == pytest.approx(skm.f1_score(REFS, PREDS))


def test_matthews_correlation_from_the_confusion_matrix():
    result = metrics.load_glue("cola").compute(predictions=PREDS, references=REFS)
    assert set(result) == {"matthews_correlation"}
    mcc = (TP * TN - FP * FN) / math.sqrt((TP + FP) * (TP + FN) * (TN + FP) * (TN + FN))  # 10 / sqrt(720)
    assert result["matthews_correlation"] == pytest.approx(mcc)
    assert result["matthews_correlation"] == pytest.approx(skm.matthews_corrcoef(REFS, PREDS))


def test_matthews_is_one_when_perfect_and_minus_one_when_inverted():
    cola = metrics.load_glue("cola")
    assert cola.compute(predictions=REFS, references=REFS)["matthews_correlation"] == pytest.approx(1.0)
    inverted = [1 - r for r in REFS]
    assert cola.compute(predictions=inverted, references=REFS)["matthews_correlation"] == pytest.approx(-1.0)


def test_stsb_pearson_and_spearman():
    preds = [0.5, 1.8, 2.2, 3.9, 4.1, 2.0]
    refs = [0.0, 2.0, 1.5, 4.0, 5.0, 3.0]
    result = metrics.load_glue("stsb").compute(predictions=preds, references=refs)
    assert set(result) == {"pearson", "spearmanr"}
    # Pearson by hand: covariance over the product of standard deviations.
    x, y = np.array(preds, dtype=np.float64), np.array(refs, dtype=np.float64)
    xc, yc = x - x.mean(), y - y.mean()
    pearson = (xc * yc).sum() / math.sqrt((xc ** 2).sum() * (yc ** 2).sum())
    # Spearman with no ties: 1 - 6 * sum(d^2) / (n (n^2 - 1)) on the ranks.
    # ranks(preds) = [1, 2, 4, 5, 6, 3], ranks(refs) = [1, 3, 2, 5, 6, 4] -> d^2 sum = 0+1+4+0+0+1 = 6
    spearman = 1 - 6 * 6 / (6 * (6 ** 2 - 1))
    # inputs pass through float32, so allow for its rounding
    assert result["pearson"] == pytest.approx(pearson, abs=1e-6)
    assert result["pearson"] == pytest.approx(stats.pearsonr(preds, refs)[0], abs=1e-6)
    assert result["spearmanr"] == pytest.approx(spearman)
    assert result["spearmanr"] == pytest.approx(stats.spearmanr(preds, refs)[0])


def test_results_are_plain_floats():
    for task, preds, refs in [("cola", PREDS, REFS), ("mrpc", PREDS, REFS), ("stsb", [0.1, 0.5, 0.9], [0.0, 1.0, 0.8])]:
        result = metrics.load_glue(task).compute(predictions=preds, references=refs)
        assert all(type(v) is float for v in result.values()), result


@pytest.mark.parametrize("task", sorted(metrics.GLUE_KEYS))
def test_every_config_loads_offline_and_gives_its_keys(task):
    metric = metrics.load_glue(task)
    assert metric.config_name == task
    preds, refs = ([0.1, 0.5, 0.9, 0.3], [0.0, 1.0, 0.8, 0.2]) if task == "stsb" else ([0, 1, 1, 0], [0, 1, 0, 0])
    assert tuple(metric.compute(predictions=preds, references=refs)) == metrics.GLUE_KEYS[task]
    feature = "float32" if task == "stsb" else "int64"
    assert metric.features["predictions"].dtype == feature and metric.features["references"].dtype == feature
    assert metric.citation and metric.description and metric.inputs_description


def test_shipped_module_keys_match_the_loader_table():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_glue_module", metrics.GLUE_MODULE / "glue.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.GLUE_KEYS == metrics.GLUE_KEYS


def test_unknown_name_raises_a_key_error_listing_the_allowed_names():
    with pytest.raises(KeyError) as err:
        metrics.load_glue("squad")
    for name in metrics.GLUE_KEYS:
        assert repr(name) in str(err.value)


def test_unknown_name_raises_in_the_module_itself():
    import evaluate

    with pytest.raises(KeyError) as err:
        evaluate.load(str(metrics.GLUE_MODULE), "boolq")
    assert "boolq" in str(err.value) and "'mrpc'" in str(err.value)


@pytest.mark.parametrize("value,offline", [("1", True), ("true", True), ("YES", True), ("0", False),
                                           ("false", False), ("", False)])
def test_offline_switch(monkeypatch, value, offline):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert metrics.hub_offline() is offline


def test_unset_counts_as_offline(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert metrics.hub_offline() is True


def test_online_path_asks_the_hub_for_glue(monkeypatch):
    import evaluate

    calls = []
    monkeypatch.setattr(evaluate, "load", lambda *a, **k: calls.append(a) or "hub-metric")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert metrics.load_glue("rte") == "hub-metric"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metrics.load_glue("rte")
    assert calls == [("glue", "rte"), (str(metrics.GLUE_MODULE), "rte")]
