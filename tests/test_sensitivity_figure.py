"""The sweep's sensitivity figure: the plotted data against a synthetic sensitivity.csv (lines,
x order and scale, the selected and shared marks), the categorical case, the placeholder."""
import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb

from lora_tsd.aggregate.figures import sensitivity
from lora_tsd.aggregate.figures.style import colour

LRS = [1e-3, 1e-4, 5e-4]  # deliberately unsorted: the figure must order x itself
METHODS = ["lora", "dora", "lora_tsd"]
SELECTED = {"lora": 5e-4, "dora": 1e-3, "lora_tsd": 5e-4}
SHARED = 1e-4


def score(method, split, lr, dropout=0.0) -> float:
    return 50 + 10 * METHODS.index(method) + 1e4 * lr + (2 if split == "test" else 0) + 100 * dropout


def rows(dropouts=(None,), family="commonsense") -> pd.DataFrame:
    """sensitivity.csv as tuned.py writes it (read back with pandas); a lora_dropout column only
    when dropouts are given. The first lr has no CI."""
    out = []
    for method in METHODS:
        for split in ("validation", "test"):
            for dropout in dropouts:
                for lr in LRS:
                    mean = score(method, split, lr, dropout or 0.0)
                    keys = {"lr": lr} if dropout is None else {"lora_dropout": dropout, "lr": lr}
                    ci = (np.nan, np.nan) if lr == LRS[0] else (mean - 1.5, mean + 2.0)
                    out.append({"model": "tiny-llama", "family": family, "method": method, "rank": 8,
                                "setting": ",".join(f"{k}={v!r}" for k, v in keys.items()), "metric": "loglik acc",
                                "mean": mean, "std": 1.0, "ci_low": ci[0], "ci_high": ci[1], "seeds": 2,
                                "split": split, "selected": lr == SELECTED[method] and dropout in (None, 0.05),
                                "shared": lr == SHARED and dropout in (None, 0.0), "status": "ok", **keys})
    return pd.read_csv(io.StringIO(pd.DataFrame(out).to_csv(index=False)))


def lines(ax) -> dict:
    """The main line of each (method, rank, model), by its label (marks are 'selected …', 'shared …')."""
    return {ln.get_gid(): ln for ln in ax.lines
            if ln.get_gid() and not ln.get_gid().startswith(("selected ", "shared "))}


def mark(ax, kind, method):
    found = [ln for ln in ax.lines if ln.get_gid() == f"{kind} {method}"]
    assert len(found) == 1, (kind, method, [ln.get_gid() for ln in ax.lines])
    return found[0]


@pytest.fixture(scope="module")
def lr_figure():
    return sensitivity.sensitivity_figure(rows(), "commonsense")


def test_two_panels_validation_and_test_share_y_with_the_asked_title(lr_figure):
    axes = [ax for ax in lr_figure.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["validation", "test"]
    assert axes[0].get_shared_y_axes().joined(axes[0], axes[1])
    assert axes[0].get_ylabel() == "loglik acc (%)"
    assert lr_figure.get_suptitle() == "commonsense: score against lr (metric: loglik acc)"
    width, height = lr_figure.get_size_inches()
    assert 9 <= width <= 11 and height <= 5


@pytest.mark.parametrize("panel,split", [(0, "validation"), (1, "test")])
def test_each_method_is_one_line_of_its_means_in_lr_order(lr_figure, panel, split):
    ax = lr_figure.axes[panel]
    drawn = lines(ax)
    assert sorted(drawn) == sorted(METHODS)  # one rank, one model: labels are the bare method
    for method, line in drawn.items():
        assert line.get_xdata().tolist() == sorted(LRS)
        assert np.allclose(line.get_ydata(), [score(method, split, lr) for lr in sorted(LRS)])
        assert line.get_color() == colour(method)


def test_lr_axis_is_log_with_the_values_as_tick_labels(lr_figure):
    for ax in lr_figure.axes[:2]:
        assert ax.get_xscale() == "log"
        assert ax.get_xticks().tolist() == sorted(LRS)
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1e-04", "5e-04", "1e-03"]
        assert ax.get_xlim()[0] < min(LRS) and ax.get_xlim()[1] > max(LRS)


@pytest.mark.parametrize("panel,split", [(0, "validation"), (1, "test")])
def test_selected_is_a_larger_filled_marker_and_shared_a_hollow_ring(lr_figure, panel, split):
    ax = lr_figure.axes[panel]
    for method in METHODS:
        line, sel, ring = lines(ax)[method], mark(ax, "selected", method), mark(ax, "shared", method)
        assert sel.get_xdata().tolist() == [SELECTED[method]]
        assert sel.get_ydata().tolist() == pytest.approx([score(method, split, SELECTED[method])])
        assert sel.get_markersize() > line.get_markersize() and sel.get_color() == colour(method)
        assert sel.get_markerfacecolor() == colour(method)
        assert ring.get_xdata().tolist() == [SHARED]
        assert ring.get_ydata().tolist() == pytest.approx([score(method, split, SHARED)])
        assert ring.get_markerfacecolor() == "none" and ring.get_markeredgecolor() == colour(method)
    legend = lr_figure.legends[0]
    assert {"selected (on validation)", "shared setting"} <= {t.get_text() for t in legend.get_texts()}


def test_error_bars_are_the_ci_and_skipped_where_it_is_missing(lr_figure):
    ax = lr_figure.axes[1]
    bars = [c for c in ax.collections if np.allclose(c.get_colors()[0][:3], to_rgb(colour("lora")))]
    assert len(bars) == 1
    segments = sorted((s[0][0], s[0][1], s[1][1]) for s in bars[0].get_segments())
    want = [(lr, score("lora", "test", lr) - 1.5, score("lora", "test", lr) + 2.0) for lr in sorted(LRS[1:])]
    assert np.allclose(segments, want)  # none at LRS[0], whose CI is NaN


def test_ranks_and_models_enter_the_labels_only_when_there_are_several():
    df = pd.concat([rows(), rows().assign(rank=16, mean=lambda d: d["mean"] + 1)], ignore_index=True)
    assert set(lines(sensitivity.sensitivity_figure(df, "commonsense").axes[0])) == \
        {f"{m} r{r}" for m in METHODS for r in (8, 16)}
    df = pd.concat([rows(), rows().assign(model="tiny-qwen")], ignore_index=True)
    assert set(lines(sensitivity.sensitivity_figure(df, "commonsense").axes[0])) == \
        {f"{m} ({model})" for m in METHODS for model in ("tiny-llama", "tiny-qwen")}


def test_two_swept_keys_plot_settings_as_categories_in_value_order():
    fig = sensitivity.sensitivity_figure(rows(dropouts=(0.0, 0.05)), "commonsense")
    settings = [f"lora_dropout={d!r},lr={lr!r}" for d in (0.0, 0.05) for lr in sorted(LRS)]
    assert fig.get_suptitle() == "commonsense: score against setting (lora_dropout, lr) (metric: loglik acc)"
    for ax, split in zip(fig.axes[:2], ("validation", "test")):
        assert ax.get_xscale() == "linear"
        assert [t.get_text() for t in ax.get_xticklabels()] == settings
        assert all(t.get_rotation() > 0 for t in ax.get_xticklabels())
        drawn = lines(ax)
        assert len(drawn) == len(METHODS)
        for method, line in drawn.items():
            assert line.get_xdata().tolist() == list(range(len(settings)))
            want = [score(method, split, lr, d) for d in (0.0, 0.05) for lr in sorted(LRS)]
            assert np.allclose(line.get_ydata(), want)
            assert mark(ax, "selected", method).get_xdata().tolist() == [3 + sorted(LRS).index(SELECTED[method])]
            assert mark(ax, "shared", method).get_xdata().tolist() == [sorted(LRS).index(SHARED)]


def test_one_varying_key_among_fixed_ones_is_still_the_x_axis():
    df = rows().assign(lora_dropout=0.05)
    fig = sensitivity.sensitivity_figure(df, "commonsense")
    assert fig.axes[0].get_xscale() == "log"
    assert fig.axes[0].get_xlabel() == "lr (log scale)"


def test_a_candidate_without_a_score_breaks_its_line_and_is_counted():
    df = rows()
    gone = (df["method"] == "dora") & (df["lr"] == 5e-4)
    df.loc[gone, ["mean", "ci_low", "ci_high", "status"]] = [np.nan, np.nan, np.nan, "diverged"]
    fig = sensitivity.sensitivity_figure(df, "commonsense")
    line = lines(fig.axes[0])["dora"]
    assert line.get_xdata().tolist() == sorted(LRS)
    assert np.isnan(line.get_ydata()[1]) and not np.isnan(line.get_ydata()[[0, 2]]).any()
    assert "1 candidate(s) without a score" in fig.get_suptitle()


@pytest.mark.parametrize("data", [rows(family="glue"), pd.DataFrame()], ids=["other family", "empty csv"])
def test_no_rows_for_the_family_draw_a_placeholder_saying_so(data):
    fig = sensitivity.sensitivity_figure(data, "commonsense")
    ax, = fig.axes
    assert not ax.axison and not ax.lines
    assert "commonsense" in ax.get_title()
    assert [t.get_text() for t in ax.texts] == ["no candidate of this family in the sweep"]


def test_the_figure_saves_as_a_png(tmp_path):
    path = tmp_path / "sensitivity.png"
    sensitivity.sensitivity_figure(rows(), "commonsense").savefig(path, dpi=110, bbox_inches="tight")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
