"""What scoring a trained cell over bf16 weights costs against scoring the base model, per
way of applying the adapter, in one process (modes alternate round by round, medians kept):

- base: the untuned model as evaluation loads it (models.load_for_eval, no adapter);
- peft float32 side branch: peft's own unmerged layer over the bf16 weights (the path before
  lora_tsd/lowrank.py), with and without models.contiguous_head_input;
- bf16 side branch: models.load_for_eval as the grid runs it (lowrank.py and the head hook).

Two workloads shaped like the default grid's ARC-Easy scoring: a log-likelihood batch (64 rows
of 104 tokens, every position's logits) and the generative protocol (60 left-padded prompts of
up to 193 tokens, 56% of them real, then 16 greedy tokens).

    python benchmarks/scoring_path.py --workdir <a finished default grid> [--rounds 3]

Writes benchmarks/results/scoring_path_cpu.json (or --out)."""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from peft import PeftModel

from lora_tsd import models, provenance

HERE = Path(__file__).resolve().parent
ADAPTER = "results/default/runs/smollm2-135m-instruct/commonsense170k/lora_init/r8/s0/adapter"


def loaders(src: str, adapter: str) -> dict:
    def peft_side(hook: bool):
        model, _ = models.load_causal_lm(src, dtype=torch.bfloat16)
        model = PeftModel.from_pretrained(model, adapter).eval()
        if hook:
            models.contiguous_head_input(model)
        return model

    return {"base": lambda: models.load_for_eval(src, None, dtype=torch.bfloat16)[0],
            "peft float32 side branch": lambda: peft_side(False),
            "peft float32 side branch + contiguous head": lambda: peft_side(True),
            "bf16 side branch (lowrank.py) + contiguous head":
                lambda: models.load_for_eval(src, adapter, dtype=torch.bfloat16)[0]}


def workloads(vocab: int) -> dict:
    g = torch.Generator().manual_seed(0)
    ll = torch.randint(100, vocab, (64, 104), generator=g)
    prompts = torch.randint(100, vocab, (60, 193), generator=g)
    lengths = torch.linspace(193, 24, 60).round().long()  # 56% of the columns are real tokens
    mask = (torch.arange(193)[None, :] >= (193 - lengths)[:, None]).long()

    def loglik(model):
        model(input_ids=ll).logits.float().log_softmax(-1)

    def generative(model):
        model.generate(input_ids=prompts, attention_mask=mask, max_new_tokens=16, min_new_tokens=16,
                       do_sample=False, pad_token_id=0)

    return {"log-likelihood batch": loglik, "generative (prefill + 16 tokens)": generative}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", default=".")
    parser.add_argument("--model", default="resources/models/smollm2-135m-instruct")
    parser.add_argument("--adapter", default=ADAPTER)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(HERE / "results" / "scoring_path_cpu.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    built = {name: load() for name, load in loaders(str(work / args.model), str(work / args.adapter)).items()}
    jobs = workloads(next(iter(built.values())).config.vocab_size)
    times = {w: {m: [] for m in built} for w in jobs}
    with torch.no_grad():
        for _ in range(args.rounds):
            for w, job in jobs.items():
                for m, model in built.items():
                    t0 = time.perf_counter()
                    job(model)
                    times[w][m].append(time.perf_counter() - t0)
    med = {w: {m: statistics.median(t) for m, t in per.items()} for w, per in times.items()}
    result = {"model": args.model, "adapter": args.adapter, "rounds": args.rounds, "threads": args.threads,
              "median_s": med, "ratio_to_base": {w: {m: s / per["base"] for m, s in per.items()}
                                                 for w, per in med.items()},
              "git_commit": provenance.git_commit(), "hardware": provenance.hardware(compute_dtype=torch.bfloat16)}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["ratio_to_base"], indent=1))


if __name__ == "__main__":
    main()
