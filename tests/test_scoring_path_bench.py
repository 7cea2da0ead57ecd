"""benchmarks/scoring_path.py's plumbing on the tiny Llama and a saved adapter: every way of
applying the adapter timed on both workloads, ratios against the base model (timings are
measured there, never asserted)."""
import json
import subprocess
import sys
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from lora_tsd.tiny import make_llama, make_tokenizer

ROOT = Path(__file__).resolve().parent.parent


def test_scoring_path_times_every_path_on_both_workloads(tmp_path):
    make_llama(vocab_size=1000).save_pretrained(tmp_path / "tiny")
    make_tokenizer().save_pretrained(tmp_path / "tiny")
    torch.manual_seed(0)
    adapted = get_peft_model(make_llama(vocab_size=1000), LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                                       target_modules=["q_proj", "v_proj"]))
    adapted.save_pretrained(tmp_path / "adapter")
    out = tmp_path / "sp.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scoring_path.py"), "--workdir", str(tmp_path),
                    "--model", "tiny", "--adapter", "adapter", "--rounds", "1", "--out", str(out)],
                   check=True, capture_output=True, text=True, cwd=ROOT)
    result = json.loads(out.read_text())
    modes = {"base", "peft float32 side branch", "peft float32 side branch + contiguous head",
             "bf16 side branch (lowrank.py) + contiguous head"}
    assert set(result["median_s"]) == {"log-likelihood batch", "generative (prefill + 16 tokens)"}
    for workload, per in result["median_s"].items():
        assert set(per) == modes and min(per.values()) > 0
        assert result["ratio_to_base"][workload]["base"] == 1.0
    assert result["hardware"]["torch_threads"] == 1
