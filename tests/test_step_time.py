"""benchmarks/step_time.py's plumbing on a small Llama shape: what it records, not how fast
(timings are measured there, never asserted)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_step_time_records_every_setting_its_memory_and_the_switch(tmp_path):
    out = tmp_path / "st.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "step_time.py"), "--settings", "llama-small:float32",
                    "llama-small:bfloat16", "--rounds", "3", "--threads", "1", "--no-llama3-8b", "--out", str(out)],
                   check=True, capture_output=True, text=True, cwd=ROOT)
    result = json.loads(out.read_text())
    assert list(result["settings"]) == ["llama-small:float32", "llama-small:bfloat16"]
    for setting, r in result["settings"].items():
        assert r["base_dtype"] == setting.split(":")[1] and (r["batch"], r["seq"]) == (2, 64)
        assert all(len(r["step_s_all"][m]) == 3 and min(r["step_s_all"][m]) > 0 for m in ("lora", "lora_dash"))
        med = r["median_step_s"]
        assert r["step_time_ratio_dash_over_lora"] == med["lora_dash"] / med["lora"]
        q = r["per_round_ratio"]
        assert q["min"] <= q["q1"] <= q["median"] <= q["q3"] <= q["max"]
        assert r["target_met"] == (r["step_time_ratio_dash_over_lora"] <= 1.05)
        # 4 layers x q, k, v, up, down: every SVD computed cold, every one read back cached
        assert (r["switch_cold"]["matrices"], r["switch_cold"]["computed"], r["switch_cold"]["read"]) == (20, 20, 0)
        assert (r["switch_cached"]["computed"], r["switch_cached"]["read"]) == (0, 20)
        assert set(r["switch_cold"]["svd_s_per_matrix_by_shape"]) == {"512x512", "128x512", "2048x512", "512x2048"}
        for m in ("lora", "lora_dash"):  # each method measured alone, in its own process
            mem = r["peak_memory"][m]
            assert mem["peak_rss_steps_mb"] > mem["rss_built_mb"] > 0
    assert result["settings_missing_target"] == [k for k, r in result["settings"].items() if not r["target_met"]]
    assert result["llama3_8b_switch"] is None
    assert result["hardware"]["torch_threads"] == 1


def test_llama3_8b_estimate_is_each_shape_s_svd_times_its_count(monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import step_time

    assert sum(c for _, c in step_time.LLAMA3_8B.values()) == 160  # 32 layers x 5 matrices
    monkeypatch.setattr(step_time, "LLAMA3_8B", {"up": ((64, 32), 3), "down": ((32, 64), 2)})
    est = step_time.llama3_8b_switch(read_mb_per_s=2.0, device=__import__("torch").device("cpu"))
    up, down = est["per_shape"]["up"], est["per_shape"]["down"]
    assert est["estimate"] is True and est["matrices"] == 5
    assert est["switch_s_cold_estimate"] == 3 * up["svd_s"] + 2 * down["svd_s"]
    entry = 4 * (64 * 32 + 32 + 32 * 32) / 2**20  # U, S, Vh in float32, either orientation
    assert up["entry_mb"] == down["entry_mb"] == entry
    assert est["cache_mb"] == 5 * entry and est["switch_s_cached_estimate"] == 5 * entry / 2.0
