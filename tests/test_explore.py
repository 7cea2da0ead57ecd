"""The exploration of task-specific directions: the paper's measures against hand-computed
cases, true TSDs recovered from a planted dW*, the tables on synthetic records, the dash
ablations' direction rules, and the trace a cell records (resumed or not)."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from lora_tsd.aggregate.analysis import load_analysis
from lora_tsd.aggregate.explore import measures as ms
from lora_tsd.aggregate.explore import page
from lora_tsd.aggregate.explore import tables as tb
from lora_tsd.aggregate.explore import figures as figs
from lora_tsd.methods import dash, registry, tsd
from lora_tsd.methods.hooks import Context
from lora_tsd.tiny import make_llama
from lora_tsd.training import analysis, cell, loop

# --- the measures, by hand


def test_recall_is_the_share_of_the_true_top4_among_the_found_top8():
    assert ms.recall(range(8), [0, 1, 2, 3]) == 1.0
    assert ms.recall(range(8, 16), [0, 1, 2, 3]) == 0.0
    assert ms.recall([0, 9, 10, 11, 12, 13, 14, 3], [0, 1, 2, 3]) == 0.5


def test_accuracy_is_the_share_of_the_found_top8_inside_the_true_top16():
    pool = list(range(16))
    assert ms.accuracy(range(8), pool) == 1.0
    assert ms.accuracy([0, 1, 2, 3, 4, 5, 40, 41], pool) == 0.75
    assert ms.accuracy(range(20, 28), pool) == 0.0
    assert ms.chance_accuracy(64) == 16 / 64 and ms.chance_recall(64) == 8 / 64


def test_projection_regions_and_positions():
    rates, s = np.array([0.1, 0.0, 2.0, 0.5]), np.array([10.0, 5.0, 2.0, 1.0])
    assert ms.projections(rates, s, [0, 2, 3]).tolist() == [1.0, 4.0, 0.5]
    assert ms.regions([0, 1, 5, 9], n=10, r=2) == {"in_top_r": 0.5, "in_bottom_r": 0.25, "between": 0.25}
    assert ms.positions([0, 9], 10) == {"median_index": 4.5, "relative_position": 0.5}
    assert ms.ranked([0.1, 0.3, 0.3, 0.0]).tolist() == [1, 2, 0, 3]  # ties by lower index


# --- true TSDs from a planted dW*

PLANTED = [5, 40, 17, 60, 33, 2, 50, 23]  # largest planted rate first


def _plant(model, names, scale=1.0):
    """Move the named matrices along directions PLANTED of their own SVD, with decreasing rates."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name in names:
            m = modules[name]
            U, S, Vh = torch.linalg.svd(m.weight.float(), full_matrices=False)
            for k, i in enumerate(PLANTED):
                rate = scale * (0.5 - 0.05 * k)
                m.weight += rate * S[i] * torch.outer(U[:, i], Vh[i])


def test_full_fine_tunings_change_rates_recover_a_planted_dW_star():
    model = make_llama(vocab_size=1000)
    start = analysis.originals(model, ["q_proj", "v_proj"])
    assert len(start) == 2 * model.config.num_hidden_layers
    assert all(name.endswith((".self_attn.q_proj", ".self_attn.v_proj")) for name in start)
    _plant(model, start)
    ctx = Context(train={}, tsd={}, total_steps=1, cache=tsd.SVDCache(None))
    arrays = analysis.analysis_arrays(model, ctx, analysis.full_changes(start))
    for name in start:
        rates = arrays[f"{name}|rates_end"]
        assert ms.ranked(rates)[:8].tolist() == PLANTED
        assert rates[PLANTED[0]] == pytest.approx(0.5, rel=1e-4)
        assert np.delete(rates, PLANTED).max() < 1e-4  # nothing else moved


# --- the tables on synthetic records


def _write(tmp_path, name, method, train_set="commonsense170k", seed=0, rank=8, modules=None, **extra):
    run = tmp_path / name
    run.mkdir(parents=True)
    np.savez(run / "tsd_analysis.npz", **{f"{m}|{k}": v for m, fields in modules.items() for k, v in fields.items()})
    return {"model": "tiny", "train_set": train_set, "method": method, "rank": rank, "seed": seed, "steps": 10,
            "base_dtype": "float32", "run_dir": str(run), **extra}


N = 64
S = np.linspace(10, 1, N)
MODULES = ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj", "model.layers.0.mlp.up_proj"]


def _rates(top):
    """Rates whose ranking starts with `top` (then every other index, lower first)."""
    rates = np.full(N, 1e-3) * (1 - np.arange(N) / (2 * N))
    for k, i in enumerate(top):
        rates[i] = 1.0 - 0.01 * k
    return rates


TRUE = list(range(20, 36))  # the true top-16, largest first


def test_recall_and_accuracy_tables_over_the_trace_against_the_full_cell(tmp_path):
    truth = {m: {"rates_end": _rates(TRUE), "singular_values": S} for m in MODULES}
    # step 5: top-8 holds 2 of the true top-4 and 6 of the true top-16; step 10: all true top-8
    early = [20, 21, 30, 31, 32, 33, 0, 1]
    trace = {"trace_steps": np.array([5, 10]), "trace_indices": np.stack([early + list(range(40, 64)), TRUE + list(range(40, 56))]),
             "trace_rates": np.ones((2, 32))}
    lora = {m: {"rates_end": _rates(TRUE), "singular_values": S, **trace} for m in MODULES}
    records = [_write(tmp_path, "full", "full", modules=truth), _write(tmp_path, "lora", "lora", modules=lora)]
    table = tb.recall_table(tb.Cells(records))
    every = table[table.module_type == tb.ALL].set_index("step")
    assert every.loc[5, "recall"] == 0.5 and every.loc[5, "accuracy"] == 0.75
    assert every.loc[10, "recall"] == 1.0 and every.loc[10, "accuracy"] == 1.0
    assert every.loc[5, "matrices"] == 3 and every.loc[5, "chance_accuracy"] == 16 / N
    assert set(table.module_type) == {"q_proj", "up_proj", tb.ALL}
    assert table[table.module_type == "q_proj"]["matrices"].tolist() == [2, 2]


def _adapter_npz(tmp_path, name, directions, scale=1.0):
    """A LoRA cell on the tiny Llama whose q_proj change is scale * sum of u_j v_j^T over
    `directions` of W's own SVD (through real B, A and the cell's analysis code)."""
    model = registry.attach("lora", make_llama(vocab_size=1000), len(directions), {"lora_alpha_ratio": 2,
                            "lora_dropout": 0.0}, ["q_proj"])
    ctx = Context(train={}, tsd={}, total_steps=1, cache=tsd.SVDCache(None))
    with torch.no_grad():
        for layer_name, layer in dash.lora_layers(model):
            dec = ctx.svd_of(layer_name, layer)
            idx = torch.tensor(directions)
            layer.lora_B["default"].weight.copy_(scale * dec.U[:, idx] / layer.scaling["default"])
            layer.lora_A["default"].weight.copy_(dec.Vh[idx])
    arrays = analysis.analysis_arrays(model, ctx)
    run = tmp_path / name
    run.mkdir()
    np.savez(run / "tsd_analysis.npz", **arrays)
    return {"model": "tiny", "train_set": "commonsense170k", "method": name, "rank": 8, "seed": 0, "steps": 1,
            "base_dtype": "float32", "run_dir": str(run)}, arrays


def test_amplification_is_zero_for_an_adapter_orthogonal_to_the_true_directions(tmp_path):
    lora, arrays = _adapter_npz(tmp_path, "lora", PLANTED, scale=0.1)  # along the planted directions
    ortho, _ = _adapter_npz(tmp_path, "lora_dash", [0, 1, 30, 45, 55, 61, 62, 63])  # along none of them
    # the truth: full fine-tuning whose top-8 are PLANTED (rates as the real cell would record them)
    truth = {m.removesuffix("|rates_end"): {"rates_end": np.where(np.isin(np.arange(64), PLANTED), 1.0, 1e-4),
                                            "singular_values": arrays[m.replace("rates_end", "singular_values")]}
             for m in arrays if m.endswith("|rates_end")}
    records = [_write(tmp_path, "full", "full", modules=truth), lora, ortho]
    amp = tb.amplification_table(tb.Cells(records)).set_index(["method", "module_type"])
    assert amp.loc[("lora_dash", tb.ALL), "projection"] == pytest.approx(0.0, abs=1e-6)
    assert amp.loc[("lora_dash", tb.ALL), "vs_lora"] == pytest.approx(0.0, abs=1e-5)
    assert amp.loc[("lora", tb.ALL), "vs_lora"] == 1.0
    # along its own directions, |u_i^T dW v_i| is the scale
    assert amp.loc[("lora", "q_proj"), "projection"] == pytest.approx(0.1, rel=1e-4)
    recall = tb.recall_table(tb.Cells(records)).set_index(["method", "module_type"])
    assert recall.loc[("lora", tb.ALL), "recall"] == 1.0 and recall.loc[("lora", tb.ALL), "accuracy"] == 1.0
    assert recall.loc[("lora_dash", tb.ALL), "recall"] == 0.0


def test_spectrum_selection_and_task_overlap_tables(tmp_path):
    truth_a = {m: {"rates_end": _rates(TRUE), "singular_values": S} for m in MODULES}
    other = [20, 21, 22, 23, 50, 51, 52, 53]  # half the true top-8 of the first set
    truth_b = {m: {"rates_end": _rates(other), "singular_values": S} for m in MODULES}
    dashed = {m: {"rates_end": _rates(TRUE), "singular_values": S, "indices_switch": np.array([20, 21, 0, 1]),
                  "rates_switch": _rates(TRUE)} for m in MODULES}
    records = [_write(tmp_path, "fa", "full", modules=truth_a), _write(tmp_path, "fb", "full", "alpaca", modules=truth_b),
               _write(tmp_path, "d", "lora_dash", modules=dashed)]
    cells = tb.Cells(records)
    spec = tb.spectrum_table(cells, [8]).set_index(["train_set", "module_type"])
    assert spec.loc[("commonsense170k", tb.ALL), "median_index"] == 23.5
    assert spec.loc[("commonsense170k", tb.ALL), "between"] == 1.0
    assert spec.loc[("alpaca", tb.ALL), "in_bottom_r"] == 0.0 and spec.loc[("alpaca", tb.ALL), "between"] == 1.0
    sel = tb.selection_table(cells).set_index("comparison")["overlap"]
    assert sel["switch vs true"] == 0.5  # {20, 21} of the true top-4
    assert sel["switch vs end"] == 0.5 and sel["end vs true"] == 1.0
    over = tb.task_overlap_table(cells)
    full = over[over.method == tb.FULL].iloc[0]
    assert (full.train_set_a, full.train_set_b, full.overlap, full.chance) == ("alpaca", "commonsense170k", 0.5, 8 / N)


def test_ablation_table_reads_the_headline_score_and_the_amplification():
    summary = pd.DataFrame([
        {"model": "m", "family": "commonsense", "protocol": p, "rank": "8", "method": m, "task": t, "metric": metric,
         "mean": v + (p == "generative"), "std": 1.0, "seeds": 2}
        for m, v in (("lora", 50.0), ("lora_dash", 55.0), ("lora_dash_bottom", 45.0)) for t in ("arc_easy", "avg")
        for p in ("generative", "loglik") for metric in ("acc_norm", "acc")])
    summary = pd.concat([summary, summary.assign(rank="16")], ignore_index=True)
    amp = pd.DataFrame([{"model": "m", "train_set": t, "method": "lora_dash", "rank": 8, "module_type": tb.ALL,
                         "vs_lora": v} for t, v in (("commonsense170k", 2.0), ("alpaca", 9.0))])
    table = tb.ablation_table(summary, amp)
    assert table["rank"].tolist() == [8, 8, 8, 16, 16, 16]  # numeric order, not "16" < "8"
    assert table.method.tolist()[:3] == ["lora", "lora_dash", "lora_dash_bottom"]
    assert table.score.tolist()[:3] == [50.0, 55.0, 45.0]
    assert table.metric.iloc[0] == "avg loglik acc"  # the family's headline: loglik acc, not generative
    # the commonsense row reads the commonsense train set's amplification only (not alpaca's 9.0)
    assert table.vs_lora_along_tsds.iloc[1] == 2.0 and np.isnan(table.vs_lora_along_tsds.iloc[2])


def test_a_grid_without_a_full_cell_gets_a_page_and_figures_that_say_what_is_missing(tmp_path):
    lora = {m: {"rates_end": _rates(TRUE), "singular_values": S} for m in MODULES}
    records = [_write(tmp_path / "r", "lora", "lora", modules=lora)]
    cells = tb.Cells(records)
    lacking = tb.missing(records, cells)
    reason, questions = lacking[0]
    assert reason.startswith("no full fine-tuning cell (method 'full')") and "ablation" not in questions
    assert [q for _, qs in lacking for q in qs if q == "ablation"]  # no ablation method either: said apart
    fig = figs.spectrum_figure(cells, [8], reason)
    assert "no full fine-tuning cell" in fig.axes[0].texts[0].get_text()
    written = page.build(records, pd.DataFrame(), [8], tmp_path / "out", tmp_path / "out" / "page.html", "t")
    html = (tmp_path / "out" / "page.html").read_text()
    assert "What this grid lacks" in html and "no full fine-tuning cell" in html
    assert html.count("<h2") == len(page.QUESTIONS) and html.count("data:image/png;base64") == 5
    assert all(p.exists() for p in written.values())
    assert pd.read_csv(written["recall.csv"]).empty


# --- the dash ablations


def test_direction_rules_pick_the_top_bottom_random_or_largest_rate_directions():
    dec = tsd.SVD(torch.eye(6), torch.tensor([6.0, 5, 4, 3, 2, 0.0]), torch.eye(6))  # the last is dead
    rates = torch.tensor([0.1, 0.9, 0.2, 0.8, 0.3, 0.0])
    assert tsd.chosen_directions(dec, rates, 2, "rate").tolist() == [1, 3]
    assert tsd.chosen_directions(dec, rates, 2, "top").tolist() == [0, 1]
    assert tsd.chosen_directions(dec, rates, 2, "bottom").tolist() == [4, 3]  # the smallest live first
    draw = [tsd.chosen_directions(dec, rates, 3, "random", torch.Generator().manual_seed(s)).tolist() for s in (0, 0, 1)]
    assert draw[0] == draw[1] and all(5 not in d and len(set(d)) == 3 for d in draw)
    with pytest.raises(ValueError, match="allowed values: rate, top, bottom, random"):
        tsd.chosen_directions(dec, rates, 2, "middle")


@pytest.mark.parametrize("rule", ["top", "bottom", "random"])
def test_an_ablation_method_dashes_along_its_rule_and_is_a_registry_entry(rule, tiny_model, train_cfg):
    spec = registry.METHODS[f"lora_dash_{rule}"]
    assert spec.switches and spec.hooks.select == rule and spec.tsd_options == registry.DASH
    model = registry.attach(f"lora_dash_{rule}", tiny_model, 4, train_cfg, ["q_proj"])
    dash.attach(model, 3)
    ctx = Context(train=train_cfg, tsd={}, total_steps=10, cache=tsd.SVDCache(None), seed=7)
    with torch.no_grad():
        for _, layer in dash.lora_layers(model):
            layer.lora_B["default"].weight.normal_()
    out = dash.switch(model, ctx.svd_of, dash.export.effective_factors, select=rule, seed=ctx.seed)
    for name, chosen in out.items():
        n = chosen["rates"].numel()
        if rule == "top":
            assert chosen["indices"].tolist() == [0, 1, 2]
        elif rule == "bottom":
            assert chosen["indices"].tolist() == [n - 1, n - 2, n - 3]
    if rule == "random":
        again = dash.switch(model, ctx.svd_of, dash.export.effective_factors, select=rule, seed=7)
        other = dash.switch(model, ctx.svd_of, dash.export.effective_factors, select=rule, seed=8)
        assert all(out[n]["indices"].tolist() == again[n]["indices"].tolist() for n in out)
        assert any(out[n]["indices"].tolist() != other[n]["indices"].tolist() for n in out)


# --- the trace a cell records


def _cell(tmp_path, tokenizer, examples, cfg, method, monkeypatch, name):
    monkeypatch.setattr(cell.models, "load_causal_lm", lambda src, dtype=None: (make_llama(vocab_size=1000), tokenizer))
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "train.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    run = tmp_path / name
    cell.run("tiny-llama", "unused", "commonsense170k", data, method, 4, 0, cfg, run / "adapter", run / "train.json",
             tsd_cfg={"dash_t": 2, "dash_s": 2, "svd_dtype": "float32"}, out_analysis=run / "tsd_analysis.npz")
    return {**json.loads((run / "train.json").read_text()), "run_dir": str(run)}


def test_cells_record_a_trace_and_full_fine_tuning_its_true_tsds(tmp_path, tokenizer, examples, train_cfg, monkeypatch):
    cfg = {**train_cfg, "steps": 5, "analysis_every": 2, "lora_dropout": 0.0}
    records = [_cell(tmp_path, tokenizer, examples, {**cfg, "lr": 1e-3}, "full", monkeypatch, "full"),
               _cell(tmp_path, tokenizer, examples, cfg, "lora_dash", monkeypatch, "dash")]
    full, dashed = (load_analysis(f"{r['run_dir']}/tsd_analysis.npz") for r in records)
    assert set(full) == set(dashed)  # the same matrices, under the same names,
    for m in full:  # numbered by the same SVD of W0
        assert np.array_equal(full[m]["singular_values"], dashed[m]["singular_values"])
        assert "trace_steps" not in full[m] and full[m]["rates_end"].max() > 0
    f = dashed["model.layers.0.self_attn.q_proj"]
    assert f["trace_steps"].tolist() == [2, 4, 5] and f["trace_indices"].shape == (3, analysis.TRACE_TOP)
    # the last snapshot is the end's top rates
    assert f["trace_indices"][-1].tolist() == ms.ranked(f["rates_end"])[:analysis.TRACE_TOP].tolist()
    assert np.allclose(f["trace_rates"][-1], np.sort(f["rates_end"])[::-1][:analysis.TRACE_TOP], rtol=1e-6)
    table = tb.recall_table(tb.Cells(records))
    assert sorted(set(table.step)) == [2, 4, 5] and set(table.method) == {"lora_dash"}
    assert table[["recall", "accuracy"]].apply(lambda c: c.between(0, 1)).all().all()


def test_a_resumed_run_records_the_same_trace(tmp_path, tokenizer, examples, train_cfg):
    cfg = {**train_cfg, "steps": 6, "analysis_every": 2, "lora_dropout": 0.0, "checkpoint_every": 3}

    def run(stop_after, ckpt, ctx=None):
        loop.seed_everything(0)
        model = registry.attach("lora", make_llama(vocab_size=1000), 4, cfg, ["q_proj", "v_proj"])
        ctx = ctx or Context(train=cfg, tsd={}, total_steps=6, cache=tsd.SVDCache(None))
        ctx.resume = loop.read_checkpoint(ckpt, loop.run_fingerprint(cfg, 0, len(examples), ctx))
        hooks = analysis.Traced(registry.METHODS["lora"].hooks, 2, analysis.adapter_changes)
        loop.fit(model, tokenizer, examples, cfg, 0, ckpt=ckpt, hooks=hooks, ctx=ctx, stop_after=stop_after)
        return analysis.trace_arrays(ctx.analysis["trace"]), ctx

    whole, _ = run(None, None)
    run(3, tmp_path / "ckpt.pt")
    resumed, ctx = run(None, tmp_path / "ckpt.pt")
    assert ctx.resume["step"] == 3 and resumed["model.layers.0.self_attn.q_proj|trace_steps"].tolist() == [2, 4, 6]
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert np.array_equal(whole[key], resumed[key]) if "indices" in key or "steps" in key \
            else np.allclose(whole[key], resumed[key], rtol=1e-5)
