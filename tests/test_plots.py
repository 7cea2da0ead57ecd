"""The leaderboard's figures: the helpers' values on hand-made inputs, the plotted data against
its inputs, and every PNG written (placeholders too) for synthetic grids."""
import json
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib import image

from lora_tsd.aggregate import analysis
from lora_tsd.aggregate.figures import comparison, curves, directions, draw

N_DIRS = 16  # singular directions per synthetic matrix


def rates_with_top(top, n=N_DIRS) -> np.ndarray:
    """Change rates whose top-len(top) set is `top`, the first listed largest."""
    rates = np.full(n, 1e-3)
    rates[list(top)] = np.arange(len(top), 0, -1, dtype=float)
    return rates


def write_npz(path, layers: dict[str, dict]) -> None:
    """A tsd_analysis.npz as train.analysis_arrays writes it: '<module>|<field>' keys."""
    arrays = {}
    for module, fields in layers.items():
        arrays[f"{module}|singular_values"] = np.linspace(10, 1, N_DIRS)
        for field, value in fields.items():
            arrays[f"{module}|{field}"] = np.asarray(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def record(run_dir, model="tiny-llama", train_set="commonsense_mix", method="lora_dash", rank=8, seed=0,
           steps=200, **extra) -> dict:
    rng = np.random.default_rng(seed + 17 * rank)
    losses = (2.5 * np.exp(-np.arange(steps) / 60) + 0.8 + 0.1 * rng.standard_normal(steps)).tolist()
    rec = {"model": model, "train_set": train_set, "method": method, "rank": rank, "seed": seed,
           "losses": losses, "tsd_config": {"dash_s": 4, "dash_t": 0.25}, "train_config": {"steps": steps},
           **extra}
    (run_dir).mkdir(parents=True, exist_ok=True)
    (run_dir / "train.json").write_text(json.dumps(rec))
    return {**rec, "run_dir": str(run_dir)}


# Two seeds, two q_proj layers, known selections (s = 4 of 16 directions):
SWITCH = {0: [[0, 1, 2, 3], [4, 5, 6, 7]], 1: [[2, 3, 8, 9], [4, 5, 6, 7]]}
END = {0: [[0, 1, 2, 3], [10, 11, 12, 13]], 1: [[0, 1, 2, 3], [4, 5, 6, 10]]}


def dash_run(tmp_path, seed, method="lora_dash", rank=8, **extra) -> dict:
    run = tmp_path / f"{method}_r{rank}_s{seed}"
    write_npz(run / "tsd_analysis.npz", {
        f"model.layers.{i}.self_attn.q_proj": {"rates_end": rates_with_top(END[seed][i]),
                                               "rates_switch": rates_with_top(SWITCH[seed][i]),
                                               "indices_switch": np.array(SWITCH[seed][i])}
        for i in range(2)})
    return record(run, method=method, rank=rank, seed=seed, **extra)


def summary_rows(methods=("lora", "dora", "lora_dash", "lora_tsd"), ranks=("8", "16")) -> pd.DataFrame:
    """A summary as tables.summarise gives it (plus ci and base_params): two families."""
    rows = []
    params = {"lora": 1000, "dora": 1100, "lora_dash": 1050, "lora_tsd": 1060, "pissa": 1000}

    def add(family, protocol, method, rank, task, metric, mean, tp):
        rows.append({"family": family, "protocol": protocol, "model": "tiny-llama", "method": method, "rank": rank,
                     "task": task, "metric": metric, "seeds": 2, "mean": mean, "std": 1.0, "expected_seeds": 2,
                     "trainable_params": tp, "train_time_s": 10.0, "peak_mem_mb": 500.0,
                     "ci_low": mean - 2.0, "ci_high": mean + 3.0, "base_params": 1_000_000})

    for m_i, method in enumerate(("base",) + tuple(methods)):
        for rank in (["-"] if method == "base" else ranks):
            tp = 0 if method == "base" else params.get(method, 900) * int(rank)
            score = 40.0 if method == "base" else 50.0 + m_i + int(rank) / 8
            for t_i, task in enumerate(("arc_easy", "piqa")):
                add("commonsense", "loglik", method, rank, task, "acc", score + t_i, tp)
                add("commonsense", "loglik", method, rank, task, "acc_norm", score - 5, tp)
            add("commonsense", "loglik", method, rank, "avg", "acc", score + 0.5, tp)
            add("commonsense", "loglik", method, rank, "avg", "acc_norm", score - 5, tp)
            add("glue", "glue", method, rank, "sst2", "accuracy", score + 20, tp)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- helpers

def test_pareto_front_known_set():
    params = [10, 20, 30, 40, 15, 20]
    scores = [50, 60, 55, 70, 45, 58]
    # (30, 55) is beaten by (20, 60); (15, 45) by (10, 50); (20, 58) by (20, 60).
    assert comparison.pareto_front(params, scores) == [0, 1, 3]
    assert comparison.pareto_front([5], [1.0]) == [0]


def test_headline_picks_avg_and_primary_metric():
    summary = summary_rows(methods=("lora",), ranks=("8",))
    h = comparison.headline(summary)
    common = h[h.family == "commonsense"]
    assert set(common.task) == {"avg"} and set(common.metric) == {"acc"}  # not acc_norm
    assert common.set_index("method").loc["lora", "mean"] == pytest.approx(51.0 + 1 + 0.5)
    glue = h[h.family == "glue"]
    assert set(glue.task) == {"sst2"} and set(glue.metric) == {"accuracy"}  # one task: its own headline
    # Several tasks and no average: one headline per task.
    no_avg = comparison.headline(summary[summary.task != "avg"])
    assert set(no_avg[no_avg.family == "commonsense"].task) == {"arc_easy", "piqa"}
    assert set(no_avg.metric) == {"acc", "accuracy"}


def test_selected_at_end_and_overlap():
    rates = [0.1, 0.5, 0.3, 0.5, 0.0, 0.9]
    assert analysis.selected_at_end(rates, 3).tolist() == [5, 1, 3]  # ties by lower index
    assert analysis.selected_at_end(rates, 10).tolist() == [5, 1, 3, 2, 0, 4]
    assert analysis.overlap({1, 2, 3, 4}, {3, 4, 5, 6}) == 0.5
    assert analysis.overlap(np.array([7, 8]), [8, 7]) == 1.0
    assert analysis.overlap([1, 2], [3, 4]) == 0.0


def test_overlap_table_exact(tmp_path):
    records = [dash_run(tmp_path, 0), dash_run(tmp_path, 1)]
    table = analysis.overlap_table(records).set_index("comparison")
    assert list(table.index) == ["seeds s0–s1 at switch", "seeds s0–s1 at end", "switch vs end, seed 0",
                                 "switch vs end, seed 1"]
    # Layer means: seeds at switch (0.5 + 1)/2; at end (1 + 0.25)/2; seed 0 (1 + 0)/2; seed 1 (0.5 + 0.75)/2.
    assert table["overlap"].tolist() == pytest.approx([0.75, 0.625, 0.5, 0.625])
    assert table["chance"].tolist() == pytest.approx([4 / N_DIRS] * 4)
    assert set(table["modules"]) == {2}
    assert set(table["method"]) == {"lora_dash"} and set(table["rank"]) == {8}
    assert table["kind"].tolist() == ["seeds at switch", "seeds at end", "switch vs end", "switch vs end"]


def test_overlap_table_skips_runs_without_a_selection(tmp_path):
    run = tmp_path / "lora"
    write_npz(run / "tsd_analysis.npz", {"model.layers.0.self_attn.q_proj": {"rates_end": rates_with_top([1])}})
    assert analysis.overlap_table([record(run, method="lora")]).empty
    assert analysis.overlap_table([{**record(tmp_path / "gone", method="lora_dash")}]).empty  # no npz at all


def test_rate_profile_averages_layers(tmp_path):
    path = tmp_path / "tsd_analysis.npz"
    np.savez_compressed(path, **{
        "model.layers.0.self_attn.q_proj|rates_end": np.array([1.0, 2.0, 3.0]),
        "model.layers.1.self_attn.q_proj|rates_end": np.array([3.0, 4.0, 5.0]),
        "model.layers.0.self_attn.v_proj|rates_end": np.array([0.5, 0.25, 0.0]),
        "model.layers.0.self_attn.v_proj|singular_values": np.array([3.0, 2.0, 1.0]),
        "bert.encoder.layer.2.attention.self.query|rates_end": np.array([1.0, 1.0, 4.0])})
    profile = analysis.rate_profile(path)
    assert sorted(profile) == ["q_proj", "query", "v_proj"]
    assert profile["q_proj"].tolist() == [2.0, 3.0, 4.0]
    assert profile["v_proj"].tolist() == [0.5, 0.25, 0.0]
    assert profile["query"].tolist() == [1.0, 1.0, 4.0]
    assert analysis.rate_profile(path, "rates_switch") == {}


def test_selection_counts(tmp_path):
    dash_run(tmp_path, 0)
    counts = analysis.selection_counts(tmp_path / "lora_dash_r8_s0" / "tsd_analysis.npz", 4)["q_proj"]
    assert np.flatnonzero(counts["switch"]).tolist() == list(range(8))  # the two layers' sets, once each
    assert counts["end"][[0, 1, 2, 3, 10, 11, 12, 13]].tolist() == [1] * 8 and counts["end"].sum() == 8


def test_switch_step():
    rec = {"method": "lora_dash", "tsd_config": {"dash_t": 0.25}, "train_config": {"steps": 200}, "losses": [1.0]}
    assert analysis.switch_step(rec) == 50
    assert analysis.switch_step({**rec, "tsd_config": {"dash_t": 30}}) == 30  # given in steps
    assert analysis.switch_step({**rec, "planned_steps": 120}) == 30  # the run's own plan (epochs) first
    assert analysis.switch_step({**rec, "switch_step": 48}) == 48  # as recorded
    assert analysis.switch_step({**rec, "method": "lora_init"}) is None


# ---------------------------------------------------------------- figures

def named(ax, gid):
    return [line for line in ax.lines if line.get_gid() == gid]


def test_pareto_figure_plots_the_inputs():
    summary = summary_rows()
    fig = comparison.pareto_figure(summary)
    ax = next(a for a in fig.axes if "average over tasks" in a.get_title())
    avg = summary[(summary.family == "commonsense") & (summary.task == "avg") & (summary.metric == "acc")]
    trained = avg[avg.method != "base"]
    for r in trained.itertuples():
        (line,) = named(ax, f"{r.method} r{r.rank}")
        assert line.get_xydata().tolist() == [[r.trainable_params, r.mean]]
    (front,) = named(ax, "pareto front")
    idx = comparison.pareto_front(trained.trainable_params, trained["mean"])
    xs, ys = front.get_data()
    assert list(xs[:-1]) == trained.trainable_params.iloc[idx].tolist()
    assert list(ys[:-1]) == trained["mean"].iloc[idx].tolist()
    assert xs[-1] == trained.trainable_params.max()  # the step runs out to the largest cell
    base = avg[avg.method == "base"]["mean"].iloc[0]
    assert any(line.get_linestyle() == "--" and list(line.get_ydata()) == [base, base] for line in ax.lines)
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "acc (%)"
    (top,) = ax.child_axes
    assert top.get_xlabel() == "% of the base model's 1M parameters"
    # Error bars are the CI: mean - 2 to mean + 3.
    segs = [c for c in ax.collections if len(c.get_segments())][0].get_segments()
    assert sorted(np.ptp(s[:, 1]) for s in segs)[0] == pytest.approx(5.0)
    assert len(fig.axes) >= 2 and any("sst2" in a.get_title() for a in fig.axes)


def test_rank_and_loss_figures_plot_the_inputs(tmp_path):
    summary = summary_rows()
    fig = comparison.rank_figure(summary)
    ax = next(a for a in fig.axes if "average over tasks" in a.get_title())
    lora = summary[(summary.method == "lora") & (summary.task == "avg") & (summary.metric == "acc")]
    (line,) = named(ax, "lora")
    assert line.get_xydata().tolist() == [[8.0, lora["mean"].iloc[0]], [16.0, lora["mean"].iloc[1]]]
    records = [dash_run(tmp_path, 0), dash_run(tmp_path, 1)] + \
        [record(tmp_path / f"l{s}", method="lora", seed=s, steps=200 - 20 * s) for s in (0, 1)]
    fig = curves.loss_figure(records)
    (ax,) = fig.axes
    (curve,) = named(ax, "lora r8")
    window = 200 // 50
    first = [np.mean(r["losses"][:window]) for r in records[2:]]
    assert curve.get_xdata()[0] == window and curve.get_ydata()[0] == pytest.approx(np.mean(first))
    # Seed 1 stopped at step 180: the mean runs on with seed 0 alone.
    assert curve.get_xdata()[-1] == 200
    assert curve.get_ydata()[-1] == pytest.approx(np.mean(records[2]["losses"][-window:]))
    switches = named(ax, "switch lora_dash")
    assert len(switches) == 1 and switches[0].get_xdata()[0] == 50  # 0.25 of 200 steps, drawn once


def test_draw_all_full_grid(tmp_path):
    records = [dash_run(tmp_path, s, m, r) for m in ("lora_dash", "lora_tsd") for r in (8, 16) for s in (0, 1)]
    records += [record(tmp_path / f"lora_{s}", method="lora", seed=s) for s in (0, 1)]
    paths = draw.draw_all(summary_rows(), records, tmp_path / "figures")
    assert sorted(paths) == sorted(draw.FILES)
    for name, path in paths.items():
        assert path.name == draw.FILES[name]
        img = image.imread(path)
        assert img.ndim == 3 and img.shape[0] >= 300 and img.shape[1] >= 500, (name, img.shape)
        assert img[..., :3].std() > 0.05, name  # not a blank canvas
    assert not list((tmp_path / "figures").glob(".*"))  # no scratch files left behind


def test_draw_all_without_tsd_cells(tmp_path):
    """A grid without TSD methods still gets every file; the TSD figures say what is missing."""
    summary = summary_rows(methods=("lora", "pissa"))
    records = [record(tmp_path / f"lora_{s}", method="lora", seed=s) for s in (0, 1)]
    fig = directions.overlap_figure(records)
    assert "no LoRA-Dash" in fig.axes[0].texts[0].get_text()
    assert "no LoRA-Dash / LoRA-TSD" in directions.profile_figure(records).axes[0].texts[0].get_text()
    paths = draw.draw_all(summary, records, tmp_path / "figures")
    assert sorted(p.name for p in paths.values()) == sorted(draw.FILES.values())
    for path in paths.values():
        assert image.imread(path).shape[0] >= 200
    # Nothing at all: placeholders throughout, still valid images.
    empty = draw.draw_all(summary.iloc[0:0], [], tmp_path / "empty")
    assert all(image.imread(p).shape[1] >= 500 for p in empty.values())


def test_init_phase_compares_with_an_end_set_of_its_size(tmp_path):
    """LoRA-TSD records an init (r directions) and a switch (s): each is compared with the
    end's top set of its own size."""
    run = tmp_path / "tsd"
    end = rates_with_top([5, 6, 7, 8, 0, 1])
    write_npz(run / "tsd_analysis.npz", {"model.layers.0.mlp.up_proj": {
        "rates_end": end, "indices_init": np.array([5, 6, 9, 10, 11, 12]), "indices_switch": np.array([0, 5, 6, 7])}})
    table = analysis.overlap_table([record(run, method="lora_tsd", rank=6)]).set_index("comparison")
    assert table.loc["init vs end, seed 0", "overlap"] == pytest.approx(2 / 6)  # top-6 at the end
    assert table.loc["switch vs end, seed 0", "overlap"] == pytest.approx(3 / 4)  # top-4: {5, 6, 7, 8}
    assert table.loc["init vs end, seed 0", "chance"] == pytest.approx(6 / N_DIRS)


def test_profile_and_overlap_figures_plot_the_inputs(tmp_path):
    records = [dash_run(tmp_path, s, "lora_tsd") for s in (0, 1)] + [dash_run(tmp_path, s) for s in (0, 1)]
    fig = directions.profile_figure(records)
    assert "lora_dash r8 seed 0" in fig.get_suptitle()  # LoRA-Dash first, then its lowest seed
    ax = fig.axes[0]
    (line,) = named(ax, "rates_end")
    expected = analysis.rate_profile(tmp_path / "lora_dash_r8_s0" / "tsd_analysis.npz")["q_proj"]
    assert np.allclose(line.get_ydata(), expected)
    assert ax.get_yscale() == "log" and ax.get_title().startswith("q_proj")
    twin = fig.axes[1]
    switch = next(c for c in twin.collections if c.get_gid() == "selected switch")
    assert sorted(switch.get_offsets()[:, 0].tolist()) == list(range(8))
    fig = directions.overlap_figure(records)
    (ax,) = fig.axes
    bars = [p for p in ax.patches if p.get_gid() == "seeds at switch"]
    assert [b.get_height() for b in bars] == pytest.approx([0.75, 0.75])  # lora_dash r8, lora_tsd r8
    assert [t.get_text() for t in ax.get_xticklabels()] == ["lora_dash\nr8", "lora_tsd\nr8"]


def test_placeholders_say_what_is_missing(tmp_path):
    no_file = [record(tmp_path / "d", method="lora_dash")]  # the method ran, its analysis is absent
    assert "left no usable tsd_analysis.npz" in directions.overlap_figure(no_file).axes[0].texts[0].get_text()
    assert "left no usable tsd_analysis.npz" in directions.profile_figure(no_file).axes[0].texts[0].get_text()
    assert directions.overlap_figure([]).axes[0].texts[0].get_text() == \
        "no LoRA-Dash / LoRA-Init / LoRA-TSD cell in this grid"
    assert curves.loss_figure([]).axes[0].texts[0].get_text() == "no training record with losses in this grid"
    assert "no trained cell" in comparison.pareto_figure(pd.DataFrame()).axes[0].texts[0].get_text()


def _tick_labels(axis_owner) -> list[str]:
    """The x tick labels matplotlib draws (those within the view), read back after a draw."""
    lo, hi = sorted(axis_owner.get_xlim())
    return [t.get_text() for t in axis_owner.get_xticklabels() if lo <= t.get_position()[0] <= hi and t.get_text()]


@pytest.mark.parametrize("counts", [
    {"lora": 1_658_880, "lora_dash": 1_659_136, "lora_init": 1_658_880, "lora_tsd": 1_659_392},  # the default grid's
    {"lora": 1_658_880, "lora_dash": 1_658_880},  # one count for every method
    {"lora": 6144, "lora_dash": 6164},  # the smoke grid's
])
def test_pareto_ticks_tell_near_equal_parameter_counts_apart(counts):
    """Every method near 1.66M parameters: each tick (and each '% of base' tick) reads
    differently, on a linear axis, and the points keep their exact counts."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    summary = summary_rows(methods=tuple(counts), ranks=("8",))
    trained = summary.method != "base"
    summary.loc[trained, "trainable_params"] = summary.loc[trained, "method"].map(counts)
    summary["base_params"] = 134_515_008
    fig = comparison.pareto_figure(summary)
    FigureCanvasAgg(fig).draw()
    for ax in [a for a in fig.axes if a.get_xlabel().startswith("trainable parameters")]:
        assert ax.get_xscale() == "linear" and ax.get_xlabel() == "trainable parameters"
        bottom = _tick_labels(ax)
        assert len(bottom) >= 2 and len(set(bottom)) == len(bottom), bottom
        (top,) = ax.child_axes
        percent = _tick_labels(top)
        assert len(percent) >= 2 and len(set(percent)) == len(percent) and all(p.endswith("%") for p in percent)
        for method in counts:
            (line,) = named(ax, f"{method} r8")
            assert line.get_xdata()[0] == counts[method]
    if len(set(counts.values())) == 4:  # 1 658 880 .. 1 659 392: ticks 1.6588M .. 1.6594M
        ax = next(a for a in fig.axes if a.get_xlabel().startswith("trainable parameters"))
        labels = _tick_labels(ax)
        assert all(re.fullmatch(r"1\.\d{4}M", t) for t in labels), labels
        assert [float(t[:-1]) * 1e6 for t in labels] == pytest.approx(list(ax.get_xticks()[
            (ax.get_xticks() >= min(ax.get_xlim())) & (ax.get_xticks() <= max(ax.get_xlim()))]))


def test_pareto_keeps_a_log_axis_with_its_short_labels_when_counts_differ_by_a_factor_two():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = comparison.pareto_figure(summary_rows())  # ranks 8 and 16: 8000 to 17 600 parameters
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "trainable parameters (log scale)"
    assert _tick_labels(ax) == ["8k", "9k", "10k"]


def test_distinct_formatter_adds_decimals_only_where_labels_would_repeat():
    from lora_tsd.aggregate.figures.style import DistinctFormatter, count_label, count_unit

    short = DistinctFormatter(count_label, count_unit, short=True)
    assert short.format_ticks([1e4, 2e4, 5e4]) == ["10k", "20k", "50k"]
    assert short.format_ticks([1_658_000, 1_659_000, 1_660_000]) == ["1.658M", "1.659M", "1.660M"]
    linear = DistinctFormatter(count_label, count_unit)
    assert linear.format_ticks([1_657_500, 1_660_000, 1_662_500]) == ["1.6575M", "1.6600M", "1.6625M"]
    assert linear.format_ticks([900, 950, 1000]) == ["0.90k", "0.95k", "1.00k"]


def test_summary_read_back_from_leaderboard_json():
    """The workflow reads the summary from leaderboard.json: missing CIs, stds and base_params
    come back as None in object columns; error bars then fall back to ± std, then to none."""
    summary = summary_rows(methods=("lora",), ranks=("8",)).astype({"rank": str})
    summary.loc[summary.method == "lora", ["ci_low", "ci_high"]] = None
    summary.loc[summary.method == "base", ["std", "ci_low", "ci_high"]] = None
    summary["base_params"] = None
    back = pd.DataFrame(json.loads(summary.to_json(orient="records")))
    bars, kind = comparison.error_bars(back[back.method == "lora"])
    assert kind == "± std over seeds" and np.allclose(bars, 1.0)
    bars, kind = comparison.error_bars(back[back.method == "base"])
    assert np.allclose(bars, 0.0)
    fig = comparison.pareto_figure(back)
    assert "± std over seeds" in fig.get_suptitle()
    assert all(not a.child_axes for a in fig.axes)  # no base_params: no "% of base" axis
