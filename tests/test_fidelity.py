"""The protocols against the reference's own code and data, not against our reading of them.

- Generative protocol and training rows: LLM-Adapters' rows and prompts (fixture rows from
  AGI-Edgerunners/LLM-Adapters' dataset/*/test.json and train.json, with the prompts and
  extract_answer outputs its own functions produced: tests/fixtures/llm_adapters/).
- Log-likelihood protocol: the installed lm-eval's own task configs, fed the same rows.
- Hub sources: the dataset ids, configs and splits those lm-eval configs read.
"""
import json
from pathlib import Path

import datasets
import pytest

from lora_tsd.data import prepare, prompts
from lora_tsd.data.tasks import TASKS, TRAIN_SETS
from lora_tsd.evaluation import protocols

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ROWS = json.loads((FIXTURES / "llm_adapters" / "rows.json").read_text())
EXTRACT = json.loads((FIXTURES / "llm_adapters" / "extract_answer.json").read_text())
COMMONSENSE = [n for n, t in TASKS.items() if t.family == "commonsense"]
WITH_RAW = [(task, i) for task, rows in ROWS["test"].items() for i, r in enumerate(rows) if r.get("raw")]


def test_every_commonsense_task_has_fixture_rows_built_from_raw_rows():
    assert {task for task, _ in WITH_RAW} == set(COMMONSENSE)


@pytest.mark.parametrize("task,i", WITH_RAW)
def test_generative_rows_rebuild_llm_adapters_test_rows_byte_for_byte(task, i):
    fixture = ROWS["test"][task][i]
    doc = TASKS[task].to_example(fixture["raw"])
    assert prepare.commonsense_row(task, doc) == fixture["llm_adapters"]
    assert protocols.generative_rows(task, [doc]) == [{"prompt": fixture["prompt"],
                                                       "answer": fixture["llm_adapters"]["answer"]}]


@pytest.mark.parametrize("task,i", [(t, i) for t, rows in ROWS["train"].items() for i in range(len(rows))])
def test_training_text_is_finetune_py_s(task, i):
    row = ROWS["train"][task][i]["llm_adapters"]
    expected = ROWS["train"][task][i]["train_text"]
    assert prompts.llm_adapters_train(row["instruction"], row["input"], row["output"]) == expected
    # what build_train_set stores: the prompt, then the response the loss is on
    assert prompts.TEMPLATES["llm_adapters"](row) + row["output"] == expected


def _dataset_to_task(name: str) -> str:
    return {"social_i_qa": "social_iqa", "ARC-Easy": "arc_easy", "ARC-Challenge": "arc_challenge"}.get(name, name)


@pytest.mark.parametrize("case", EXTRACT["cases"], ids=lambda c: f"{c['dataset']}:{c['sentence'][:30]}")
def test_answer_extraction_equals_llm_adapters_extract_answer(case):
    from lm_eval.filters.extraction import RegexFilter

    task = _dataset_to_task(case["dataset"])
    spec = protocols.generative_yaml(task, "unused.jsonl", protocols.DEFAULT_EVAL)
    regex = spec["filter_list"][0]["filter"][0]
    kept = RegexFilter(regex["regex_pattern"], regex["group_select"], regex["fallback"]).apply(
        [[case["sentence"]]], [{}])
    assert kept == [[case["expected"]]]


# --- log-likelihood: our offline task is lm-eval's own config with only the data swapped.

def _instances(task_obj):
    task_obj.build_all_requests(limit=None, rank=0, world_size=1)
    return [(inst.request_type, inst.arguments, inst.doc_id) for inst in task_obj.instances]


@pytest.fixture(scope="module")
def task_manager():
    from lm_eval.tasks import TaskManager

    return TaskManager()


@pytest.mark.parametrize("task", COMMONSENSE)
def test_offline_loglik_task_builds_the_requests_lm_eval_s_own_task_builds(task, task_manager, tmp_path,
                                                                           monkeypatch):
    from lm_eval.tasks import TaskManager

    docs = [TASKS[task].to_example(r["raw"]) for r in ROWS["test"][task] if r.get("raw")]
    test_file = tmp_path / "test.jsonl"
    test_file.write_text("".join(json.dumps(d) + "\n" for d in docs))
    spec = protocols.task_yaml(task, test_file)
    import yaml

    (tmp_path / "local.yaml").write_text(yaml.safe_dump(spec))
    ours = TaskManager(include_path=str(tmp_path)).load([spec["task"]])["tasks"][spec["task"]]

    # The standard task, built by lm-eval from its own config, reading the same rows "from the hub".
    cfg = protocols.lm_eval_config(task)[1]
    real_load = datasets.load_dataset

    def hub(path=None, name=None, **kwargs):
        if path == cfg["dataset_path"]:
            assert name == cfg.get("dataset_name")
            splits = {cfg.get(k) for k in ("training_split", "validation_split", "test_split")} - {None}
            return datasets.DatasetDict({s: datasets.Dataset.from_list(docs) for s in splits})
        return real_load(path, name, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", hub)
    reference = task_manager.load([task])["tasks"][task]
    assert _instances(ours) == _instances(reference)
    assert len(ours.instances) >= len(docs) * 2  # one request per choice


def test_winogrande_loglik_is_lm_eval_s_partial_scoring(tmp_path):
    from lm_eval.tasks import TaskManager
    import yaml

    doc = TASKS["winogrande"].to_example({"sentence": "Sam beat Max so _ won the cup.", "option1": "Sam",
                                          "option2": "Max", "answer": "1"})
    (tmp_path / "t.jsonl").write_text(json.dumps(doc) + "\n")
    spec = protocols.task_yaml("winogrande", tmp_path / "t.jsonl")
    (tmp_path / "w.yaml").write_text(yaml.safe_dump(spec))
    task = TaskManager(include_path=str(tmp_path)).load([spec["task"]])["tasks"][spec["task"]]
    args = [a for _, a, _ in _instances(task)]
    # the contexts vary (sentence up to the blank, each option); the continuation is shared
    assert args == [("Sam beat Max so Sam", " won the cup."), ("Sam beat Max so Max", " won the cup.")]


# --- hub: the data lm-eval's tasks read, and none of it a loading-script dataset.

@pytest.mark.parametrize("task", COMMONSENSE)
def test_hub_source_is_the_one_lm_eval_s_task_reads(task, task_manager):
    spec = TASKS[task]
    entry = task_manager.task_index[spec.lm_eval_task]
    import lm_eval.tasks

    assert Path(entry.yaml_path).resolve() == (Path(lm_eval.tasks.__file__).parent / spec.lm_eval_yaml).resolve()
    cfg = protocols.lm_eval_config(task)[1]
    assert (spec.hub.path, spec.hub.name) == (cfg["dataset_path"], cfg.get("dataset_name"))
    assert spec.hub.train_split == cfg["training_split"]
    assert spec.hub.test_split == (cfg.get("test_split") or cfg["validation_split"])


def test_no_hub_id_is_a_loading_script_dataset():
    checked = json.loads((FIXTURES / "hub_datasets.json").read_text())["datasets"]
    used = {t.hub.path for t in TASKS.values()} | {s.hub for s in TRAIN_SETS.values() if s.hub}
    for hub_id in used:
        assert hub_id in checked, f"{hub_id}: not in tests/fixtures/hub_datasets.json"
        assert checked[hub_id]["loading_script"] is False, (hub_id, checked[hub_id]["evidence"])
    # the ids this suite used before, which current datasets refuses
    assert checked["ybisk/piqa"]["loading_script"] and checked["allenai/social_i_qa"]["loading_script"]
