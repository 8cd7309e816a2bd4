"""Detection over several processes: ``torchrun --nproc_per_node N -m memlib detect ...`` (one process per GPU, or
N CPU processes sharing the cores).

Each rank scores whole batches of the prompts still to do, batch k on rank k mod N, the batches being the ones a
single process forms, so a prompt's score does not depend on N. A rank writes its rows to a resumable CSV of its
own beside the results (``scores.shard-1-of-2.csv``, with its own settings file and lock); rank 0 gathers the rows
over ``torch.distributed``, writes the merged CSV in a single process's order, columns and summary, and then each
rank removes its shard file. An interrupted run resumes shard by shard when rerun with the same N. Calibration is
sharded the same way, and every rank derives the threshold from the same merged negatives. The process group is
NCCL with one GPU per local rank when the machine has GPUs and no CPU device was asked for, else gloo.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch


def world() -> tuple[int, int]:
    """(this process's rank, number of ranks); (0, 1) outside a process group."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def start(device: str | None) -> str | None:
    """Join the process group torchrun describes (WORLD_SIZE > 1; otherwise nothing happens) and return this
    rank's device: GPU number LOCAL_RANK when ``device`` leaves the GPU to choose ('cuda', 'auto' or none), else
    ``device`` as given. Each rank gets an equal share of the machine's CPU threads."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if torch.cuda.is_available() and device in (None, "", "auto", "cuda"):
        if local >= torch.cuda.device_count():
            raise ValueError(f"local rank {local} has no GPU of its own ({torch.cuda.device_count()} visible); "
                             "give --nproc_per_node at most the number of GPUs, or --device cpu")
        device = f"cuda:{local}"
    gpu = str(device or "").startswith("cuda")
    if gpu:
        torch.cuda.set_device(device)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if gpu else "gloo")
    return device


def stop() -> None:
    """Leave the process group, if this process joined one."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast(obj):
    """Rank 0's ``obj`` on every rank (any picklable object)."""
    if world()[1] == 1:
        return obj
    import torch.distributed as dist
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    n = world()[1]
    if n == 1:
        return [obj]
    import torch.distributed as dist
    out = [None] * n
    dist.all_gather_object(out, obj)
    return out


def shard(texts: list[str], per_call: int, rank: int, n_ranks: int) -> list[str]:
    """The texts rank ``rank`` scores: batch k of ``per_call`` consecutive texts goes to rank k mod ``n_ranks``."""
    if per_call < 1 or not 0 <= rank < n_ranks:
        raise ValueError(f"shard: per_call = {per_call}, rank {rank} of {n_ranks}")
    batches = [texts[s:s + per_call] for s in range(0, len(texts), per_call)]
    return [t for b in batches[rank::n_ranks] for t in b]


def shard_path(path: Path, rank: int, n_ranks: int) -> Path:
    """Rank ``rank``'s file beside ``path``: ``scores.csv`` -> ``scores.shard-1-of-2.csv`` (its settings file and
    lock are named after it, so no two ranks, and no rank and the merged file, share one)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.shard-{rank}-of-{n_ranks}{path.suffix}")
