"""The embedded instruction-following data and the offline IFEval bridge: the training outputs
pass lm-eval's own strict checkers, the eval prompts follow google/IFEval's schema on held-out
topics, the generator reproduces the committed files, and nltk's punkt model needs no network."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lora_tsd.data.instruction_data import make_data as md
from lora_tsd.evaluation import ifeval

DATA_DIR = Path(md.__file__).parent


def _read(name):
    return [json.loads(line) for line in (DATA_DIR / name).read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def train():
    return _read(md.TRAIN_FILE)


@pytest.fixture(scope="module")
def prompts():
    return _read(md.PROMPTS_FILE)


def test_train_rows_have_fields_and_registered_ids(train):
    assert len(train) == 300
    registry = ifeval.registry()
    for r in train:
        assert list(r) == ["instruction", "input", "output", "instruction_id_list", "kwargs", "topic"]
        assert r["instruction"] and r["output"] and isinstance(r["input"], str)
        assert 1 <= len(r["instruction_id_list"]) == len(r["kwargs"]) <= 2
        assert all(i in registry for i in r["instruction_id_list"])
    assert len({r["topic"] for r in train}) == len(md.TRAIN_TOPICS) == 30
    assert len({i for r in train for i in r["instruction_id_list"]}) == len(md.SINGLES) == 15
    assert sum(len(r["instruction_id_list"]) == 2 for r in train) == 60
    assert 0 < sum(bool(r["input"]) for r in train) < 100
    words = sorted(md.count_words(r["output"]) for r in train)
    assert 30 <= words[len(words) // 2] <= 90 and sum(30 <= w <= 90 for w in words) >= 0.9 * len(words)


def test_every_training_output_passes_strict(train):
    failures = [(r["topic"], r["instruction_id_list"], res) for r in train
                if not all((res := ifeval.check(r["output"], r["instruction_id_list"], r["kwargs"],
                                                r["instruction"]))["strict"])]
    assert failures == []


def test_case_rows_fail_strict_when_case_is_flipped(train):
    """The checker is not vacuous: the same content in the wrong case fails."""
    flips = {md.LOWER: str.upper, md.CAPITAL: str.lower}
    rows = [r for r in train if set(flips) & set(r["instruction_id_list"])]
    assert len(rows) >= 40
    for r in rows:
        iid = next(i for i in r["instruction_id_list"] if i in flips)
        bad = flips[iid](r["output"])
        res = ifeval.check(bad, [iid], [{}], r["instruction"])
        assert res == {"strict": [False], "loose": [False]}


@pytest.mark.parametrize("response, iid, kwargs", [
    ("THE SUN WARMS THE SEA AND THE WATER RISES INTO THE AIR AS VAPOR.", md.LOWER, {}),
    ("The water cycle, which the sun drives, never stops.", md.NO_COMMA, {}),
    ("* The sun warms the sea.\n* Vapor rises.", md.BULLETS, {"num_bullets": 3}),
    ("A response with no title at all.", md.TITLE, {}),
    ('"Quoted at first" but not at the end.', md.QUOTE, {}),
    ("Tides follow the moon. Any other questions? Yes.", md.END, {"end_phrase": "Any other questions?"}),
    ("First part.\n***\nSecond part.", md.PARAGRAPHS, {"num_paragraphs": 3}),
    ("{'not': 'json'}", md.JSON, {}),
])
def test_violating_responses_fail_strict(response, iid, kwargs):
    assert ifeval.check(response, [iid], [kwargs], "A prompt.")["strict"] == [False]


def test_prompt_file_has_ifeval_schema(prompts, train):
    assert len(prompts) == 72
    keys = [p["key"] for p in prompts]
    assert all(type(k) is int for k in keys) and len(set(keys)) == len(keys)
    registry, types = ifeval.registry(), {}
    for p in prompts:
        assert list(p) == ["key", "prompt", "instruction_id_list", "kwargs"]
        assert 1 <= len(p["instruction_id_list"]) == len(p["kwargs"]) <= 2
        for iid, kw in zip(p["instruction_id_list"], p["kwargs"]):
            inst = registry[iid](iid)
            inst.build_description(**kw)
            assert set(kw) <= set(inst.get_instruction_args_keys())  # only this instruction's args
            args = inst.get_instruction_args() or {}
            # every argument is given, none drawn at random by build_description
            assert set(args) == set(kw) and all(args[k] == (sorted(v) if isinstance(v, list) else v)
                                                for k, v in kw.items())
            for k, v in kw.items():  # one type per key, so the rows load as one Arrow table
                assert types.setdefault(k, type(v)) is type(v)
    seen = {i for r in train for i in r["instruction_id_list"]}
    asked = {i for p in prompts for i in p["instruction_id_list"]}
    assert seen <= asked and asked - seen == {md.FORBIDDEN, md.HIGHLIGHT}


def test_eval_topics_are_disjoint_from_training(train, prompts):
    names = {r["topic"] for r in train}
    facts = {f for topic in md.TRAIN_TOPICS for f in topic[4]}
    assert not names & {t[0] for t in md.EVAL_TOPICS}
    for p in prompts:
        hits = [n for n in names if re.search(rf"\b{re.escape(n)}", p["prompt"], flags=re.IGNORECASE)]
        assert hits == [], (p["key"], hits)
        assert not any(f in p["prompt"] for f in facts)
    # every held-out topic is asked about
    assert all(any(t[1] in p["prompt"] for p in prompts) for t in md.EVAL_TOPICS)


def test_generator_is_deterministic_and_matches_committed_files(tmp_path):
    first, second = md.make_data(tmp_path / "a"), md.make_data(tmp_path / "b")
    assert [p.name for p in first] == [md.TRAIN_FILE, md.PROMPTS_FILE]
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes() == (DATA_DIR / a.name).read_bytes()


def test_ensure_punkt_in_fresh_nltk_data(tmp_path, monkeypatch):
    import nltk
    from nltk.tokenize import _get_punkt_tokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer, PunktTokenizer

    root = tmp_path / "nltk_data"
    monkeypatch.setenv("NLTK_DATA", str(root))
    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))
    _get_punkt_tokenizer.cache_clear()  # load the model from `root`, not a cached one
    assert ifeval.ensure_punkt() == root.resolve()
    english = root / "tokenizers" / "punkt_tab" / "english"
    assert sorted(p.name for p in english.iterdir()) == sorted(ifeval.PUNKT_FILES)
    assert all(p.read_text() == "" for p in english.iterdir())
    assert nltk.data.path[0] == str(root.resolve())
    assert os.environ["NLTK_DATA"].split(os.pathsep)[0] == str(root.resolve())
    assert nltk.sent_tokenize("Hello there. How are you?") == ["Hello there.", "How are you?"]
    assert nltk.word_tokenize("Hello there, friend.") == ["Hello", "there", ",", "friend", "."]
    text = "Dr. Smith met Mr. Jones at 5 p.m. in the U.S. They talked. Then they left!"
    assert PunktTokenizer().tokenize(text) == PunktSentenceTokenizer().tokenize(text)  # untrained
    _get_punkt_tokenizer.cache_clear()


def test_a_trained_punkt_model_is_used_instead_of_the_fallback(tmp_path, monkeypatch):
    import nltk

    trained = tmp_path / "trained"
    lang = trained / "tokenizers" / "punkt_tab" / "english"
    lang.mkdir(parents=True)
    for name in ifeval.PUNKT_FILES:
        (lang / name).write_text("")
    (lang / "abbrev_types.txt").write_text("dr\nmr\n")
    (lang / "sent_starters.txt").write_text("they\n")  # a trained model's files are not empty
    fallback = tmp_path / "fallback"
    monkeypatch.setattr(nltk.data, "path", [str(fallback), str(trained)])
    monkeypatch.setenv("NLTK_DATA", str(fallback))
    assert ifeval.ensure_punkt() == trained
    assert not fallback.exists() and str(fallback) not in nltk.data.path


def test_ifeval_import_never_downloads(tmp_path):
    """A fresh interpreter: ensure_punkt, then lm-eval's ifeval import, with nltk.download
    replaced by a failure, so any download attempt would show."""
    code = ("import nltk, sys\n"
            "def boom(*a, **k): raise SystemExit('nltk.download called')\n"
            "nltk.download = boom\n"
            "from lora_tsd.evaluation import ifeval\n"
            "print(ifeval.check('all lowercase english words here about rivers.', "
            "['change_case:english_lowercase'], [{}], 'p'))\n")
    env = dict(os.environ, NLTK_DATA=str(tmp_path / "nltk"), HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "{'strict': [True], 'loose': [True]}"
