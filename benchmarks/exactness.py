"""Which settings give the same numbers bit for bit on another CPU, and what the exact switch
(configs/exact.yaml: float32 and pinned kernel paths, lora_tsd/kernels.py) costs.

One machine stands in for other CPUs by capping the instruction sets its libraries may use
(oneDNN's bf16 matmuls: ONEDNN_MAX_CPU_ISA; torch's own kernels: ATEN_CPU_CAPABILITY; MKL's
float32 GEMM: MKL_ENABLE_INSTRUCTIONS). Hosts: this CPU as it is, one with AVX512-BF16 and no
AMX (oneDNN capped: the AMD EPYC the README's first numbers came from takes that path), and one
with AVX2 only (all three capped). Under each host and setting, a fresh process trains the
default grid's two kinds of cell for a few steps with the default recipe (SmolLM2 LoRA-Dash on
Commonsense170K rows, switch included; MiniLM LoRA on SST-2) and scores them (ARC-Easy both
protocols, SST-2), then the records are compared with this CPU's under the same setting:
identical (every loss, adapter byte and per-item score) or not (how far apart).

Settings: default (bf16 causal weights and scoring, as config.yaml), float32 (float32, no pins),
exact (float32 and the pins). Times are this CPU's (host "native"), one process at a time.

    python benchmarks/exactness.py [--workdir DIR] [--steps 6] [--runs RUNS] [--timeout S]
        [--json benchmarks/results/exactness_cpu.json]

DIR holds a finished default grid's resources/ (models, train sets, data): run (a) there first.
Each host and setting's record is kept in RUNS (reused when there: a rerun does what is left); a
process past --timeout is recorded as not finished (bf16 on an AVX2-only CPU is emulated, slowly).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOSTS = {
    "native": {},
    "avx512-bf16, no AMX": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"},
    "avx2 only": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}
SETTINGS = {"default": {"dtype": "bfloat16", "exact": False},
            "float32": {"dtype": "float32", "exact": False},
            "exact": {"dtype": "float32", "exact": True}}
CELLS = [  # (model, train set, method, task scored, eval rows)
    ("smollm2-135m-instruct", "commonsense170k", "lora_dash", "arc_easy", 20),
    ("all-minilm-l6-v2", "sst2", "lora", "sst2", 40),
]


def sha(path: Path) -> str:
    """The adapter's weights (its config lists target modules in set order, which varies by process)."""
    h = hashlib.sha256()
    for f in sorted(Path(path).glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def child(workdir: Path, setting: str, steps: int, out: Path) -> None:
    """One host and setting: train and score each cell, write what must agree and the times."""
    from lora_tsd import kernels

    kernels.pin(SETTINGS[setting]["exact"])
    import yaml

    from lora_tsd import provenance
    from lora_tsd.data.tasks import TASKS, TRAIN_SETS
    from lora_tsd.evaluation import scoring
    from lora_tsd.pipeline.cells import cell_train
    from lora_tsd.training import cell

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    dtype = SETTINGS[setting]["dtype"]
    data_key = next((workdir / "resources" / "data").iterdir()).name
    results, tmp = {}, Path(tempfile.mkdtemp())
    for model, train_set, method, task, rows in CELLS:
        cfg = {**cell_train(config, TRAIN_SETS[train_set].family, train_set, method), "steps": steps,
               "base_dtype": dtype}
        run = tmp / model
        t0 = time.perf_counter()
        train = cell.run(model, str(workdir / "resources" / "models" / model), train_set,
                         workdir / "resources" / "train_sets" / data_key / train_set, method, 8, 0, cfg,
                         run / "adapter", run / "train.json", tsd_cfg={k: v for k, v in config["tsd"].items() if k != "svd_cache"})
        t1 = time.perf_counter()
        eval_cfg = {**config["eval"], "limit": rows, "dtype": dtype, "protocols": ["loglik", "generative", "glue"]}
        rec = scoring.run(model, str(workdir / "resources" / "models" / model), task,
                          workdir / "resources" / "data" / data_key / task / "test.jsonl", run / "adapter",
                          eval_cfg, run / "eval.json", {"method": method})
        t2 = time.perf_counter()
        results[model] = {
            "losses": [float.hex(float(x)) for x in train["losses"]], "adapter_sha": sha(run / "adapter"),
            "scores": {p: {"metrics": r["metrics"], "items_sha": hashlib.sha256(json.dumps(
                r["items"], sort_keys=True).encode()).hexdigest()[:16]} for p, r in rec["results"].items()},
            "train_s": t1 - t0, "eval_s": t2 - t1, "family": TASKS[task].family}
    out.write_text(json.dumps({"results": results, "hardware": provenance.hardware()}))
    shutil.rmtree(tmp)


def compare(mine: dict, ref: dict) -> dict:
    """Per cell: identical, or the largest loss difference and the scores that moved."""
    out = {}
    for model, r in mine.items():
        base = ref[model]
        losses = [abs(float.fromhex(a) - float.fromhex(b)) for a, b in zip(r["losses"], base["losses"])]
        same = (r["losses"] == base["losses"], r["adapter_sha"] == base["adapter_sha"],
                all(r["scores"][p]["items_sha"] == base["scores"][p]["items_sha"] for p in r["scores"]))
        out[model] = {"identical": all(same), "losses_identical": same[0], "adapter_identical": same[1],
                      "items_identical": same[2], "max_loss_diff": max(losses, default=0.0),
                      "metric_diffs": {p: {m: v - base["scores"][p]["metrics"].get(m, float("nan"))
                                           for m, v in s["metrics"].items() if not m.endswith("_stderr")
                                           and v != base["scores"][p]["metrics"].get(m)}
                                       for p, s in r["scores"].items()}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("."))
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/exactness_cpu.json"))
    ap.add_argument("--runs", type=Path, default=Path("resources/exactness"))
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--child", nargs=2, metavar=("SETTING", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.workdir.resolve(), args.child[0], args.steps, Path(args.child[1]))
    runs, unfinished = {}, {}
    args.runs.mkdir(parents=True, exist_ok=True)
    for host, caps in HOSTS.items():
        for setting in SETTINGS:
            out = args.runs / f"{host.split(',')[0].replace(' ', '-')}-{setting}-{args.steps}.json"
            if not out.exists():
                env = {**os.environ, **caps, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
                t0 = time.perf_counter()
                try:
                    subprocess.run([sys.executable, __file__, "--workdir", str(args.workdir), "--steps",
                                    str(args.steps), "--child", setting, str(out)], env=env, check=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    unfinished[f"{host} | {setting}"] = f"not finished in {args.timeout:.0f} s"
                    print(f"{host:22s} {setting:8s} not finished in {args.timeout:.0f} s", flush=True)
                    continue
                out.write_text(json.dumps({**json.loads(out.read_text()), "wall_s": time.perf_counter() - t0}))
            runs[(host, setting)] = json.loads(out.read_text())
            print(f"{host:22s} {setting:8s} {runs[(host, setting)]['wall_s']:.0f} s", flush=True)
    report = {"steps": args.steps, "cells": CELLS, "hosts": HOSTS, "settings": SETTINGS,
              "machine": runs[("native", "default")]["hardware"], "unfinished": unfinished, "runs": {}}
    for (host, setting), run in runs.items():
        report["runs"][f"{host} | {setting}"] = {
            "host": host, "setting": setting, "cpu_capability": run["hardware"]["cpu_capability"],
            "times_s": {m: {"train": r["train_s"], "eval": r["eval_s"]} for m, r in run["results"].items()},
            "vs_native": compare(run["results"], runs[("native", setting)]["results"])}
    native = {s: runs[("native", s)]["results"] for s in SETTINGS}
    report["cost_vs_default"] = {s: {m: {k: native[s][m][k] / native["default"][m][k] for k in ("train_s", "eval_s")}
                                     for m in native[s]} for s in SETTINGS}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    for key, run in report["runs"].items():
        verdict = ", ".join(f"{m.split('-')[0]}: {'identical' if c['identical'] else 'differs (max loss diff %.2e)' % c['max_loss_diff']}"
                            for m, c in run["vs_native"].items())
        print(f"{key:34s} {verdict}")
    for s, cost in report["cost_vs_default"].items():
        print(f"cost of {s:8s} vs default: " + ", ".join(f"{m.split('-')[0]} train x{c['train_s']:.2f} eval x{c['eval_s']:.2f}"
                                                        for m, c in cost.items()))


if __name__ == "__main__":
    main()
