"""Per-item uncertainty (lora_tsd.aggregate.stats, items, uncertainty) on synthetic data with
known answers: metrics against sklearn/scipy, CI coverage, the permutation test against
McNemar's exact test, its size under the null, and the paired table end to end."""
import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest, pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from lora_tsd.aggregate import items as item_scores
from lora_tsd.aggregate import stats, tables, uncertainty


def binary(values, prefix="q") -> stats.Items:
    values = np.asarray(values, dtype=float)
    return stats.Items("mean", tuple(f"{prefix}{i}" for i in range(len(values))), values, np.ones_like(values))


def test_row_statistics_equal_the_reference_implementations():
    rng = np.random.default_rng(0)
    pred, label = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    x, y = rng.normal(size=40), rng.normal(size=40)
    y[:10] = x[:10]  # some correlation, and ties in the ranks
    x[5] = x[6]
    assert stats.statistic("accuracy", pred, label)[0] == pytest.approx(100 * accuracy_score(label, pred))
    assert stats.statistic("f1", pred, label)[0] == pytest.approx(100 * f1_score(label, pred))
    assert stats.statistic("matthews_correlation", pred, label)[0] == pytest.approx(100 * matthews_corrcoef(label, pred))
    assert stats.statistic("pearson", x, y)[0] == pytest.approx(100 * pearsonr(x, y)[0])
    assert stats.statistic("spearmanr", x, y)[0] == pytest.approx(100 * spearmanr(x, y)[0])
    # IFEval's instruction level: checks passed over checks, pooled over prompts.
    assert stats.statistic("mean", np.array([1, 2, 0]), np.array([1, 3, 2]))[0] == pytest.approx(100 * 3 / 6)


def test_cell_ci_covers_the_true_accuracy_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(200):
        items = binary(rng.random(200) < 0.7)
        low, high = stats.cell_ci([[items]], n_boot=500, rng=rng)
        covered += low <= 70 <= high
    assert 0.90 <= covered / 200 <= 0.99


def test_cell_ci_spans_seed_to_seed_variation():
    """Two seeds at 50% and 80% on 2,000 items: item noise alone is ±2 points, so an interval
    that covers seed variation reaches both seeds' scores, while one seed's stays narrow."""
    rng = np.random.default_rng(2)
    low_seed, high_seed = binary(np.arange(2000) % 2 == 0), binary(np.arange(2000) % 5 != 0)
    low, high = stats.cell_ci([[low_seed], [high_seed]], rng=rng)
    assert low < 53 and high > 77
    one = stats.cell_ci([[low_seed]], rng=rng)
    assert 46 < one[0] < 50 < one[1] < 54


def test_identical_methods_differ_by_zero_with_p_one():
    rng = np.random.default_rng(3)
    same = binary(rng.random(100) < 0.6)
    out = stats.paired({0: [same]}, {0: [same]})
    assert out["diff"] == 0 and out["ci_low"] == 0 and out["ci_high"] == 0 and out["p"] == 1.0


def test_permutation_p_value_matches_mcnemars_exact_test():
    """30 discordant items, 21 won by the method: the sign-flip test on 0/1 scores is McNemar's
    exact (binomial) test on the discordant items."""
    method = np.r_[np.ones(21), np.zeros(9), np.ones(40), np.zeros(30)]
    baseline = np.r_[np.zeros(21), np.ones(9), np.ones(40), np.zeros(30)]
    out = stats.paired({0: [binary(method)]}, {0: [binary(baseline)]}, n_perm=20000)
    exact = binomtest(21, 30, 0.5).pvalue
    assert out["diff"] == pytest.approx(12.0)
    assert out["p"] == pytest.approx(exact, abs=0.006)
    assert out["ci_low"] > 0  # 12 points on 100 items with 30 discordant: the CI excludes 0


def test_permutation_test_has_its_nominal_size_under_the_null():
    rng = np.random.default_rng(4)
    rejected = 0
    for _ in range(200):
        a, b = binary(rng.random(80) < 0.6), binary(rng.random(80) < 0.6)
        rejected += stats.paired({0: [a]}, {0: [b]}, n_boot=200, n_perm=400, rng=rng)["p"] < 0.05
    assert 0.01 <= rejected / 200 <= 0.10


def test_a_large_effect_is_significant_and_the_diff_is_the_mean_over_seeds_and_tasks():
    rng = np.random.default_rng(5)
    method = {s: [binary(rng.random(150) < 0.9, "a"), binary(rng.random(150) < 0.9, "b")] for s in (0, 1)}
    base = {s: [binary(rng.random(150) < 0.5, "a"), binary(rng.random(150) < 0.5, "b")] for s in (0, 1)}
    out = stats.paired(method, base)
    expected = np.mean([100 * (m.a.mean() - b.a.mean()) for s in (0, 1) for m, b in zip(method[s], base[s])])
    assert out["diff"] == pytest.approx(expected)
    assert out["ci_low"] > 20 and out["p"] < 1e-3 and out["seeds"] == 2 and out["n_items"] == 300


def test_paired_refuses_records_of_different_items():
    with pytest.raises(ValueError, match="differ in their items"):
        stats.paired({0: [binary([1, 0, 1], "a")]}, {0: [binary([1, 0, 1], "b")]})


def test_items_are_aligned_by_hash_not_by_position():
    a = stats.Items("mean", ("x", "y", "z"), np.array([1.0, 0.0, 1.0]), np.ones(3))
    b = stats.Items("mean", ("z", "x", "y"), np.array([1.0, 1.0, 0.0]), np.ones(3))
    assert stats.paired({0: [a]}, {0: [b]})["diff"] == 0


def _record(path, method, seed, correct, family="commonsense", task="arc_easy"):
    n = len(correct)
    results = {"loglik": {"metrics": {"acc": float(np.mean(correct)), "acc_stderr": 0.01}, "n_test": n,
                          "items": {"doc_id": list(range(n)), "doc_hash": [f"h{i}" for i in range(n)],
                                    "acc": [float(c) for c in correct]}}}
    rec = {"model": "m", "task": task, "family": family, "train_set": "cs", "method": method, "rank": 8,
           "seed": seed, "results": results,
           "train": {"trainable_params": 100, "base_params": 10000, "steps": 5, "final_loss": 1.0,
                     "train_time_s": 2.0, "peak_rss_mb": 100.0, "tokens_per_s": 50.0}, "adapter_bytes": 2**20}
    path.write_text(json.dumps(rec))
    return path


def test_leaderboard_marks_the_significant_paired_difference(tmp_path):
    n = 200
    good = (np.arange(n) % 10 != 0).astype(float)  # 90%
    poor = (np.arange(n) % 2 == 0).astype(float)   # 50%
    files = [_record(tmp_path / f"{m}{s}.json", m, s, c) for s in (0, 1)
             for m, c in (("lora", poor), ("lora_dash", good), ("lora_init", poor))]
    md = tmp_path / "l.md"
    tables.write(files, {}, {"commit": "x", "config_hash": "y", "data": "d"}, md, tmp_path / "l.csv",
                 tmp_path / "l.json", tmp_path / "paired.csv")
    paired = pd.read_csv(tmp_path / "paired.csv")
    dash = paired[paired.method == "lora_dash"].iloc[0]
    init = paired[paired.method == "lora_init"].iloc[0]
    assert dash["diff"] == pytest.approx(40.0) and dash["significant"] and dash["p"] < 1e-3
    assert init["diff"] == 0 and not init["significant"] and init["p"] == 1
    text = md.read_text()
    assert "90.00 ± 0.00 [" in text and " ▲" in text and "Paired with LoRA" in text
    assert "+40.00 [+" in text and "] p<0.001 ▲" in text
    summary = pd.DataFrame(json.loads((tmp_path / "l.json").read_text())["summary"])
    row = summary[summary.method == "lora_dash"].iloc[0]
    assert row["ci_low"] < 90 < row["ci_high"] and row["ci_high"] - row["ci_low"] < 12
    # The cost table: % of base and the adapter size.
    cost = next(line for line in text.splitlines() if line.startswith("| m ") and "lora_dash" in line and "[" not in line)
    assert [c.strip() for c in cost.strip("|").split("|")] == ["m", "lora_dash", "8", "100", "1.000", "100", "2.0",
                                                               "50", "1.00"]


def test_glue_items_follow_their_subset_and_statistic():
    res = {"metrics": {"accuracy_matched": 0.5, "accuracy_mismatched": 1.0},
           "items": {"doc_id": [0, 1, 2, 3], "doc_hash": list("abcd"), "prediction": [1, 0, 2, 2],
                     "label": [1, 1, 2, 2], "subset": ["matched", "matched", "mismatched", "mismatched"]}}
    out = item_scores._protocol_items("glue", res)
    assert stats.statistic(out["accuracy_matched"].kind, out["accuracy_matched"].a, out["accuracy_matched"].b)[0] == 50
    assert out["accuracy_mismatched"].n == 2
    assert item_scores.glue_kind("matthews_correlation") == ("matthews_correlation", None)


def test_avg_rows_pool_the_family_tasks():
    items = {}
    for task, p in (("t1", 0.9), ("t2", 0.5)):
        for method, shift in (("lora", 0), ("x", 1)):
            values = (np.arange(100) % 10 < 10 * p - shift).astype(float)
            items[("cs", "loglik", "m", method, "8", task, "acc", 0)] = binary(values)
    summary = pd.DataFrame([{"family": "cs", "protocol": "loglik", "model": "m", "method": m, "rank": "8",
                             "task": t, "metric": "acc"} for m in ("lora", "x") for t in ("t1", "t2", "avg")])
    compared = uncertainty.comparisons(summary, items)
    avg = compared[compared.task == "avg"].iloc[0]
    assert avg["diff"] == pytest.approx(-10.0) and avg["n_items"] == 200


def test_a_mark_stays_in_its_own_protocol_s_table():
    """The generative and log-likelihood tables share task and metric names (arc_easy acc):
    a significant generative difference must not mark the log-likelihood cell."""
    rows = [{"family": "commonsense", "protocol": p, "model": "m", "method": m, "rank": "8", "task": "arc_easy",
             "metric": "acc", "seeds": 2, "expected_seeds": 2, "mean": 50.0, "std": 1.0, "median": 50.0,
             "ci_low": 40.0, "ci_high": 60.0} for p in ("loglik", "generative") for m in ("lora", "lora_init")]
    summary = pd.DataFrame(rows)
    compared = pd.DataFrame([{"family": "commonsense", "protocol": p, "model": "m", "method": "lora_init",
                              "rank": "8", "task": "arc_easy", "metric": "acc", "diff": d, "ci_low": lo,
                              "ci_high": hi, "p": pv, "significant": sig}
                             for p, d, lo, hi, pv, sig in (("generative", 11.7, 1.7, 21.7, 0.04, True),
                                                           ("loglik", -4.2, -10.8, 2.5, 0.31, False))])
    cell = lambda p: tables.family_table(summary, "commonsense", p, compared=compared) \
        .set_index("method").loc["lora_init", "arc_easy acc"]
    assert cell("generative").endswith(" ▲") and not cell("loglik").endswith(("▲", "▼"))


def test_interval_ends_are_replicates_and_float_noise_is_not_above_zero():
    """Equal scores computed two ways differ by ~1e-15: such a lower end is 0, not 'above 0'.
    The ends are replicate values, not interpolations between them."""
    replicates = np.r_[np.full(30, 1e-15), np.linspace(0.8, 20, 970)]
    low, high = stats._interval(replicates, 0.95)
    assert low == 0.0 and high in np.round(replicates, 9)
    assert stats._interval(np.arange(1000.0), 0.95) == (24.0, 975.0)
