"""GLUE metric for `evaluate`, loadable by path (offline) with the same config names and output keys
as the hub's `glue` metric, so `evaluate.load("glue", name)` and
`evaluate.load("<this folder>", name)` are interchangeable.

Kept self-contained (no relative imports, one import per line): `evaluate` copies this file into
its dynamic-modules cache and scans its imports before importing it."""
import datasets
import evaluate
import numpy as np
from scipy.stats import pearsonr
from scipy.stats import spearmanr
from sklearn.metrics import f1_score
from sklearn.metrics import matthews_corrcoef

_CITATION = """\
@inproceedings{wang2019glue,
  title={{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding},
  author={Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer and Bowman, Samuel R.},
  note={In the Proceedings of ICLR.},
  year={2019}
}
"""

_DESCRIPTION = """\
The GLUE benchmark metric: the official score(s) of each GLUE task.
CoLA is scored with the Matthews correlation coefficient; STS-B with the Pearson and Spearman
correlations between predicted and gold similarity scores; MRPC and QQP with accuracy and binary F1
(positive class 1); SST-2, MNLI (matched / mismatched), QNLI, RTE and WNLI with accuracy.
The configuration name selects the task.
"""

_KWARGS_DESCRIPTION = """
Compute the GLUE score of a task's predictions.
Args:
    predictions: list of predictions to score. Class indices (int) for every task but `stsb`,
        where they are real-valued similarity scores (float).
    references: list of gold labels, of the same kind as the predictions.
Returns: depending on the configuration (task),
    "accuracy": accuracy (sst2, mnli, mnli_matched, mnli_mismatched, qnli, rte, wnli, mrpc, qqp),
    "f1": binary F1 of class 1 (mrpc, qqp),
    "matthews_correlation": Matthews correlation coefficient (cola),
    "pearson": Pearson correlation (stsb),
    "spearmanr": Spearman rank correlation (stsb).
Examples:
    >>> glue_metric = evaluate.load("lora_tsd/evaluation/metrics/glue", "mrpc")
    >>> glue_metric.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
    {'accuracy': 0.75, 'f1': 0.6666666666666666}

    >>> glue_metric = evaluate.load("lora_tsd/evaluation/metrics/glue", "stsb")
    >>> results = glue_metric.compute(predictions=[0.0, 1.0, 2.0, 3.0], references=[0.0, 1.0, 2.0, 3.0])
    >>> {k: round(v, 2) for k, v in results.items()}
    {'pearson': 1.0, 'spearmanr': 1.0}
"""

# Task -> the keys its score carries (mirrors the hub metric).
GLUE_KEYS = {
    "cola": ("matthews_correlation",),
    "sst2": ("accuracy",),
    "mrpc": ("accuracy", "f1"),
    "qqp": ("accuracy", "f1"),
    "stsb": ("pearson", "spearmanr"),
    "mnli": ("accuracy",),
    "mnli_matched": ("accuracy",),
    "mnli_mismatched": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
}


def _accuracy(predictions, references) -> float:
    return float((np.asarray(predictions) == np.asarray(references)).mean())


def _accuracy_and_f1(predictions, references) -> dict:
    return {"accuracy": _accuracy(predictions, references),
            "f1": float(f1_score(y_true=references, y_pred=predictions))}


def _correlations(predictions, references) -> dict:
    return {"pearson": float(pearsonr(predictions, references)[0]),
            "spearmanr": float(spearmanr(predictions, references)[0])}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Glue(evaluate.Metric):
    def _info(self):
        if self.config_name not in GLUE_KEYS:
            raise KeyError(f"Unknown GLUE configuration {self.config_name!r}: "
                           f"choose one of {sorted(GLUE_KEYS)}")
        dtype = "float32" if self.config_name == "stsb" else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value(dtype),
                                        "references": datasets.Value(dtype)}),
            codebase_urls=[],
            reference_urls=["https://gluebenchmark.com/"],
            format="numpy",
        )

    def _compute(self, predictions, references):
        name = self.config_name
        if name == "cola":
            return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
        if name == "stsb":
            return _correlations(predictions, references)
        if name in ("mrpc", "qqp"):
            return _accuracy_and_f1(predictions, references)
        if name in GLUE_KEYS:
            return {"accuracy": _accuracy(predictions, references)}
        raise KeyError(f"Unknown GLUE configuration {name!r}: choose one of {sorted(GLUE_KEYS)}")
