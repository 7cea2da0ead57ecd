"""Data-parallel training of one cell (`train.gpus` > 1), the collectives: torchrun (launch.py)
starts one process per GPU (gloo CPU processes where there is none, which is how the tests check it). Every process
collates the same global batch and trains on its own contiguous rows; gradients are summed
over processes with each row weighted by its share of the global batch's loss, so a step's
update is the single-process update at the same global batch, to float rounding. Rank 0
writes the checkpoint and the run's outputs; the others only compute.

Gradients are reduced by hand, not by DistributedDataParallel: LoRA's trainable tensors are
small, and a tensor that gets no gradient yet (LoRA-Dash's d before the switch) must stay
without one, as AdamW skips it in the single-process run too."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def process_rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return process_rank() == 0


def init() -> None:
    """Join the process group torchrun describes in the environment (nothing without one);
    each process takes the GPU of its local rank."""
    if active() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")


def finish() -> None:
    if active():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def my_rows(n: int) -> slice:
    """This process's contiguous share of a batch of n rows (the first n % world get one more)."""
    size, r = world_size(), process_rank()
    if n < size:
        raise ValueError(f"a batch of {n} rows cannot be split over {size} processes; "
                         f"set train.batch_size >= train.gpus")
    per, extra = divmod(n, size)
    start = r * per + min(r, extra)
    return slice(start, start + per + (1 if r < extra else 0))


def sum_gradients(params: list) -> None:
    """All-reduce (sum) every gradient that exists, in one flat buffer."""
    if not active():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def sum_value(x: float) -> float:
    """A float summed over processes (each process's share of the global loss)."""
    if not active():
        return x
    t = torch.tensor([x], dtype=torch.float64, device="cuda" if torch.cuda.is_available() else "cpu")
    dist.all_reduce(t)
    return float(t)


def broadcast_tensors(tensors: list) -> None:
    """Rank 0's values in every process (bool tensors go as uint8: gloo has no bool)."""
    if not active():
        return
    with torch.no_grad():
        for t in tensors:
            if t.dtype == torch.bool:
                buf = t.to(torch.uint8)
                dist.broadcast(buf, 0)
                t.copy_(buf.bool())
            else:
                dist.broadcast(t.data, 0)


def gather(obj) -> list:
    """Every process's `obj`, in rank order (all processes must call it)."""
    if not active():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
