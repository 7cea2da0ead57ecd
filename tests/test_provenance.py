"""What every record says about the machine: the CPU's model and the ISA features that pick its
kernels, torch's view of them, thread counts, the matmul precision and compute dtype, and the GPU
with its compute capability (issue 26: bf16 numbers move between CPU kernels)."""
import json

import pytest
import torch

from lora_tsd import provenance
from lora_tsd.evaluation import scoring
from lora_tsd.tiny import make_llama
from lora_tsd.training import cell

# The first processor's block of /proc/cpuinfo on three machines (flags shortened).
INTEL_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu sse4_2 avx f16c fma avx2 avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8 avx_vnni

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu
"""
AMD_EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse4_2 avx f16c fma avx2 avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16
"""
ARM = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes sha1 asimdhp sve bf16 i8mm
CPU implementer\t: 0x41
"""


@pytest.mark.parametrize("text,model,flags", [
    (INTEL_AMX, "Intel(R) Xeon(R) Platinum 8488C",
     ["sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512dq", "avx512bw", "avx512vl",
      "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8"]),
    (AMD_EPYC, "AMD EPYC 9R14 96-Core Processor",
     ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512_vnni",
      "avx512_bf16"]),
    (ARM, None, ["asimd", "asimdhp", "sve", "bf16", "i8mm"]),
    ("", None, []),
])
def test_cpuinfo_gives_the_model_and_the_kernel_choosing_features(text, model, flags):
    assert provenance.parse_cpuinfo(text) == {"model": model, "flags": flags}


def test_the_two_machines_of_issue_26_differ_in_amx():
    intel, amd = provenance.parse_cpuinfo(INTEL_AMX)["flags"], provenance.parse_cpuinfo(AMD_EPYC)["flags"]
    assert set(intel) - set(amd) == {"avx_vnni", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8"}
    assert "avx512_bf16" in intel and "avx512_bf16" in amd


def test_an_unreadable_cpuinfo_falls_back_to_the_platform(tmp_path, monkeypatch):
    provenance.cpu_info.cache_clear()
    monkeypatch.setattr(provenance.platform, "processor", lambda: "")
    info = provenance.cpu_info(str(tmp_path / "missing"))
    assert info == {"model": provenance.platform.machine(), "flags": []}
    provenance.cpu_info.cache_clear()


def test_hardware_records_this_machine(monkeypatch):
    threads = torch.get_num_threads()
    precision = torch.get_float32_matmul_precision()
    try:
        torch.set_num_threads(1)
        torch.set_float32_matmul_precision("high")
        info = provenance.hardware(torch.bfloat16)
    finally:
        torch.set_num_threads(threads)
        torch.set_float32_matmul_precision(precision)
    cpu = provenance.cpu_info()
    assert info["cpu"] == cpu["model"] and info["cpu_flags"] == cpu["flags"] and info["cpu"]
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["torch_threads"] == 1 and info["float32_matmul_precision"] == "high"
    assert info["compute_dtype"] == "bfloat16" and info["onednn"] == torch.backends.mkldnn.is_available()
    assert info["torch_interop_threads"] == torch.get_num_interop_threads()
    assert {"platform", "python", "cpu", "torch_threads"} <= set(info)  # the keys records had before
    assert "compute_dtype" not in provenance.hardware() and provenance.hardware("float32")["compute_dtype"] == "float32"
    with open("/proc/cpuinfo") as f:
        first = next((line for line in f if line.startswith("model name")), None)
    if first:
        assert info["cpu"] == first.split(":", 1)[1].strip()
    json.dumps(info)  # a record's field


def test_hardware_records_the_gpu_and_its_compute_capability(monkeypatch):
    cuda = torch.cuda
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "get_device_name", lambda i=0: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(cuda, "get_device_capability", lambda i=0: (9, 0))
    monkeypatch.setattr(cuda, "device_count", lambda: 1)
    monkeypatch.setattr(cuda, "is_bf16_supported", lambda *a, **k: True)
    info = provenance.hardware(torch.bfloat16)
    assert (info["gpu"], info["gpu_capability"], info["gpu_count"], info["gpu_bf16"]) == \
        ("NVIDIA H100 80GB HBM3", "9.0", 1, True)
    assert info["cuda_matmul_tf32"] == torch.backends.cuda.matmul.allow_tf32 and "cudnn_tf32" in info


@pytest.mark.parametrize("base_dtype", ["float32", "bfloat16"])
def test_a_train_record_names_its_compute_dtype(tmp_path, monkeypatch, tokenizer, examples, train_cfg, base_dtype):
    monkeypatch.setattr(cell.models, "load_causal_lm",
                        lambda src, dtype=None: (make_llama(vocab_size=1000).to(dtype), tokenizer))
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    metrics = cell.run("tiny-llama", "unused", "commonsense170k", data, "lora", 4, 0,
                       {**train_cfg, "steps": 2, "base_dtype": base_dtype}, tmp_path / "adapter",
                       tmp_path / "train.json")
    hw = json.loads((tmp_path / "train.json").read_text())["hardware"]
    assert hw["compute_dtype"] == base_dtype == metrics["base_dtype"]
    assert hw["cpu"] == provenance.cpu_info()["model"] and hw["torch_threads"] == 1  # the job's threads


def test_an_evaluation_record_names_the_machine_and_its_dtype(tmp_path):
    # a diverged cell's record: written without loading a model
    record = scoring.run("tiny-llama", "unused", "arc_easy", tmp_path / "none.jsonl", tmp_path / "adapter",
                         {"batch_size": 8, "limit": None, "protocols": ["loglik"], "dtype": "bfloat16"},
                         tmp_path / "eval.json", {"method": "lora", "train": {"diverged": {"step": 1}}})
    assert record["hardware"]["compute_dtype"] == record["eval_dtype"] == "bfloat16"
    assert json.loads((tmp_path / "eval.json").read_text())["hardware"]["cpu"] == provenance.cpu_info()["model"]
