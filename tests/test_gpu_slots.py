"""The GPU slot pool, without GPUs: processes that claim devices from a pretend CUDA_VISIBLE_DEVICES
each get their own, a surplus one waits for a slot, and a killed holder frees its slot."""
import os
import signal
import subprocess
import sys
import time

import pytest

from lora_tsd.pipeline import gpu_slots

HOLD = """
import os, sys, time
from lora_tsd.pipeline import gpu_slots
device, lock = gpu_slots.claim(sys.argv[1], wait_s=float(sys.argv[2]), poll_s=0.05)
print(device, os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
time.sleep(float(sys.argv[3]))
"""


def _holder(lock_dir, devices="0,1", wait_s=30, hold_s=60):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": devices}
    return subprocess.Popen([sys.executable, "-c", HOLD, str(lock_dir), str(wait_s), str(hold_s)], env=env,
                            stdout=subprocess.PIPE, text=True)


def _claimed(proc) -> tuple[str, str]:
    device, visible = proc.stdout.readline().split()
    return device, visible


def test_a_cpu_machine_claims_nothing(tmp_path):
    assert gpu_slots.claim(tmp_path, environ={"CUDA_VISIBLE_DEVICES": ""}) == (None, None)
    assert gpu_slots.visible_devices({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def test_concurrent_jobs_get_distinct_gpus_and_narrow_their_view(tmp_path):
    first, second = _holder(tmp_path), _holder(tmp_path)
    try:
        got = [_claimed(first), _claimed(second)]
        assert sorted(d for d, _ in got) == ["0", "1"]
        assert all(device == visible for device, visible in got)  # each sees only its own GPU
    finally:
        for p in (first, second):
            p.kill()
            p.wait()


def test_a_surplus_job_waits_and_a_killed_holder_frees_its_gpu(tmp_path):
    holders = [_holder(tmp_path), _holder(tmp_path)]
    claimed = [_claimed(p)[0] for p in holders]
    waiting = _holder(tmp_path)
    try:
        time.sleep(1.0)
        assert waiting.poll() is None  # blocked: both GPUs held
        holders[0].send_signal(signal.SIGKILL)  # as an OOM killer would
        holders[0].wait()
        device, _ = _claimed(waiting)
        assert device == claimed[0]
    finally:
        for p in [*holders, waiting]:
            p.kill()
            p.wait()


def test_no_free_gpu_names_the_resources_flag(tmp_path):
    holder = _holder(tmp_path, devices="0")
    try:
        _claimed(holder)
        with pytest.raises(TimeoutError, match=r"--resources gpu="):
            gpu_slots.claim(tmp_path, environ={"CUDA_VISIBLE_DEVICES": "0"}, wait_s=0.2, poll_s=0.05)
    finally:
        holder.kill()
        holder.wait()


def test_locks_are_per_host(tmp_path, monkeypatch):
    """On a shared filesystem, GPU 0 of one node does not block GPU 0 of another."""
    holder = _holder(tmp_path, devices="0")
    try:
        _claimed(holder)
        monkeypatch.setattr(gpu_slots.socket, "gethostname", lambda: "another-node")
        env = {"CUDA_VISIBLE_DEVICES": "0"}
        device, lock = gpu_slots.claim(tmp_path, environ=env, wait_s=0.2)
        assert device == "0" and env["CUDA_VISIBLE_DEVICES"] == "0"
        lock.close()
    finally:
        holder.kill()
        holder.wait()


def test_a_data_parallel_job_claims_several_gpus_and_never_holds_part_while_waiting(tmp_path):
    holder = _holder(tmp_path, devices="0,1,2")  # holds one of three
    try:
        taken, _ = _claimed(holder)
        env = {"CUDA_VISIBLE_DEVICES": "0,1,2"}
        devices, locks = gpu_slots.claim(tmp_path, environ=env, count=2, wait_s=5, poll_s=0.05)
        assert len(locks) == 2 and env["CUDA_VISIBLE_DEVICES"] == devices
        assert sorted(devices.split(",")) == sorted({"0", "1", "2"} - {taken})
        # all three now held: a job that needs two waits, and holds none of them meanwhile
        with pytest.raises(TimeoutError, match="no 2 free GPU"):
            gpu_slots.claim(tmp_path, environ={"CUDA_VISIBLE_DEVICES": "0,1,2"}, count=2, wait_s=0.2, poll_s=0.05)
        for lock in locks:
            lock.close()
        again, more = gpu_slots.claim(tmp_path, environ={"CUDA_VISIBLE_DEVICES": "0,1,2"}, count=2, wait_s=1,
                                      poll_s=0.05)
        assert sorted(again.split(",")) == sorted(devices.split(","))
        for lock in more:
            lock.close()
    finally:
        holder.kill()
        holder.wait()


def test_more_gpus_than_visible_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="train.gpus"):
        gpu_slots.claim(tmp_path, environ={"CUDA_VISIBLE_DEVICES": "0"}, count=2)
