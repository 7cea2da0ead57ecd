"""The SVD stage (rule svd_cache, lora_tsd/methods/svds.py): it fills the cache with exactly the
entries the cells key, so a LoRA-Dash, LoRA-TSD or MiLoRA cell after it computes no SVD."""
import json

import pytest
import torch

from lora_tsd import models
from lora_tsd.methods import export, registry, svds, tsd
from lora_tsd.tiny import make_bert, make_llama, make_tokenizer
from lora_tsd.training import cell

TSD_CFG = {"dash_t": 2, "dash_s": 2, "init_estimate": "warmup", "init_steps": 2, "init_scale": "singular",
           "init_residualise": True, "svd_dtype": "float32"}
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    make_llama(vocab_size=1000).save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-bert")
    make_bert().save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


def _cell_keys(model_src, train_set, dtype, svd_dtype, seed=0) -> dict:
    """Each adapted matrix's cache key as a cell takes it (Context.svd_of): its model loaded and
    wrapped as training does, the key of the layer's original W."""
    base, _, peft_extra = models.load_for_training(str(model_src), train_set, seed, dtype)
    model = registry.attach("lora_dash", base, 4, {"lora_alpha_ratio": 2, "lora_dropout": 0.0},
                            models.target_modules(base), **peft_extra)
    cache = tsd.SVDCache(None)
    return {name.removeprefix("base_model.model."): cache.key(export.original_weight(layer), svd_dtype)
            for name, layer in export.lora_layers(model)}


def test_the_manifest_holds_the_cells_keys_and_the_entries_are_the_weights_svds(llama_dir, tmp_path):
    cache, out = tmp_path / "svd", tmp_path / "svd" / "bfloat16-float32.json"
    manifest = svds.svd_cache(str(llama_dir), "causal", "bfloat16", "float32", None, cache, out)
    assert json.loads(out.read_text()) == json.loads(json.dumps(manifest))
    keys = _cell_keys(llama_dir, "commonsense170k", torch.bfloat16, torch.float32)
    assert len(keys) == 2 * len(LLAMA_TARGETS)  # two decoder layers
    assert {name: m["key"] for name, m in manifest["matrices"].items()} == keys
    assert manifest["computed"] == 10 and manifest["kept"] == 0 and manifest["base_dtype"] == "bfloat16"
    assert manifest["device"] == "cpu" and manifest["svd_s"] > 0
    assert sorted(p.stem for p in cache.glob("*.pt")) == sorted(keys.values())
    weights = dict(make_llama(vocab_size=1000).named_parameters())
    for name, m in manifest["matrices"].items():
        w = weights[f"{name}.weight"].to(torch.bfloat16)
        assert m["shape"] == list(w.shape)
        entry, want = torch.load(cache / f"{m['key']}.pt", weights_only=True), tsd.svd(w, torch.float32)
        for field in ("U", "S", "Vh"):
            assert torch.equal(entry[field], getattr(want, field)), (name, field)
    # A second run keeps every entry (unread) and computes none; float64 SVDs are other entries.
    again = svds.svd_cache(str(llama_dir), "causal", "bfloat16", "float32", None, cache, out)
    assert again["computed"] == 0 and again["kept"] == 10
    wide = svds.svd_cache(str(llama_dir), "causal", "bfloat16", "float64", None, cache, tmp_path / "f64.json")
    assert wide["computed"] == 10
    assert {m["key"] for m in wide["matrices"].values()} == \
        set(_cell_keys(llama_dir, "commonsense170k", torch.bfloat16, torch.float64).values())


def test_an_encoder_s_keys_are_its_cells_whatever_their_head(bert_dir, tmp_path):
    manifest = svds.svd_cache(str(bert_dir), "encoder", "bfloat16", "float32", None, tmp_path, tmp_path / "m.json")
    assert manifest["base_dtype"] == "float32"  # encoders load in float32 whatever train.base_dtype says
    # a 3-class head, drawn from seed 1: the adapted matrices are the same
    keys = _cell_keys(bert_dir, "mnli", torch.float32, torch.float32, seed=1)
    assert {name: m["key"] for name, m in manifest["matrices"].items()} == keys
    assert len(keys) == 2 * 6  # query, key, value, intermediate.dense and both output.dense per layer


def test_without_a_cache_the_stage_writes_only_its_manifest(llama_dir, tmp_path):
    manifest = svds.svd_cache(str(llama_dir), "causal", "auto", "float32", None, None, tmp_path / "m.json")
    assert manifest["svd_cache"] is False and manifest["matrices"] == {}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


@pytest.mark.parametrize("base_dtype", ["bfloat16", "float32"])
def test_cells_after_the_stage_compute_no_svd(llama_dir, data_dir, tmp_path, train_cfg, monkeypatch, base_dtype):
    cache = tmp_path / "svd"
    svds.svd_cache(str(llama_dir), "causal", base_dtype, "float32", None, cache, tmp_path / "manifest.json")

    def computed(*_):
        raise AssertionError("a cell computed an SVD the stage had cached")

    monkeypatch.setattr(tsd, "svd", computed)
    cfg = {**train_cfg, "steps": 4, "base_dtype": base_dtype}
    for method, tsd_cfg in (("lora_dash", TSD_CFG), ("lora_tsd", TSD_CFG), ("milora", {})):
        out = tmp_path / method
        record = cell.run("tiny-llama", str(llama_dir), "commonsense170k", data_dir, method, 4, 0, cfg,
                          out / "adapter", out / "train.json", tsd_cfg=tsd_cfg, svd_cache=cache,
                          out_analysis=out / "tsd_analysis.npz")
        hits = {"lora_dash": 2, "lora_tsd": 3, "milora": 2}[method] * 10  # reads: switch / init, the analysis
        assert record["svd_cache"] == f"[svd-cache] {hits} hits, 0 computed ({cache})", method
        assert record["base_dtype"] == base_dtype


def test_traced_cells_and_full_fine_tuning_after_the_stage_compute_no_svd(llama_dir, data_dir, tmp_path, train_cfg,
                                                                          monkeypatch):
    """With train.analysis_every, a LoRA cell reads SVDs at every snapshot and full fine-tuning
    its W0's at the end (a float32 copy: the float32 stage's keys)."""
    cache = tmp_path / "svd"
    svds.svd_cache(str(llama_dir), "causal", "float32", "float32", None, cache, tmp_path / "manifest.json")
    monkeypatch.setattr(tsd, "svd", lambda *_: pytest.fail("a cell computed an SVD the stage had cached"))
    cfg = {**train_cfg, "steps": 4, "base_dtype": "float32", "analysis_every": 2}
    for method, lr, reads in (("lora", 1e-2, 3), ("full", 1e-4, 1)):  # snapshots at steps 2 and 4, the end
        out = tmp_path / method
        record = cell.run("tiny-llama", str(llama_dir), "commonsense170k", data_dir, method, 4, 0, {**cfg, "lr": lr},
                          out / "adapter", out / "train.json", svd_cache=cache, out_analysis=out / "tsd_analysis.npz")
        assert record["svd_cache"] == f"[svd-cache] {reads * 10} hits, 0 computed ({cache})", method
