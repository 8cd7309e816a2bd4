"""Iterative ensemble training (IET; Liu et al., ECCV 2024, Sec. 3.2) on ``torch.distributed``, with IET-AGC+'s
memory-sample redistribution (MSR; Guan et al., arXiv 2502.09434) on alternate rounds.

The training rows are split into K shards, one proxy model per shard. Each proxy keeps its own optimizer state,
learning-rate schedule, RNG and AGC loss bank across rounds (its own resumable ``train_loop`` folder); after each
round the proxies are averaged, theta = (1/K) sum_k theta_k, and every proxy restarts from the average. With MSR,
odd rounds do not average: each shard passes its most-skipped quarter to the next shard in a ring and every proxy
keeps its own weights (the last round always averages).

Each rank is one process (``torchrun``; gloo on CPU, NCCL on GPU) and trains the shards k with k % world == rank
in turn. Aggregation is a collective: every rank all-gathers the flattened proxies and sums them in shard order,
so the result does not depend on the number of ranks. Rank 0 writes each finished round atomically
(``rounds/round-RRR.pt``); a run killed at any point resumes from the last finished round to the same weights.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist

from ..checkpoint import load_weights, read_meta
from ..config import Config, check_range
from ..train import TrainConfig
from .agc import AGCHook, redistribute


@dataclass
class IETConfig(Config):
    shards: int = 4                  # K proxy models
    rounds: int = 10                 # R
    steps_per_round: int = 300       # optimizer steps per proxy per round
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 100          # counted over a proxy's whole run, so it happens in the first round
    seed: int = 0
    agc: bool = False                # AGC: skip samples with r l < M[t]
    agc_r: float = 2.0
    agc_beta: float = 0.8
    msr: bool = False                # MSR: odd rounds exchange the most-skipped rows instead of averaging
    msr_fraction: float = 0.25
    taa: bool = False                # TAA: an extra augmented step on queued kept samples (IET-AGC+)
    taa_kappa: float = 5.0           # strength exp(-kappa d) from the distance d to the skip threshold
    taa_base: int = 5                # RandAugment magnitude floor(mean strength x base)

    def validate(self) -> None:
        check_range("shards", self.shards, 1, 256)
        check_range("rounds", self.rounds, 1)
        check_range("steps_per_round", self.steps_per_round, 1)
        check_range("msr_fraction", self.msr_fraction, 0.0, 1.0)
        if self.msr and not self.agc:
            raise ValueError("MSR moves the rows AGC skips most: set agc=True with msr=True")
        if self.taa and not self.agc:
            raise ValueError("TAA augments by the distance to AGC's skip threshold: set agc=True with taa=True")

    @property
    def label(self) -> str:
        """IET, IET+AGC, IET+AGC+MSR, IET+AGC+MSR+TAA (the full IET-AGC+), ..."""
        return "+".join(["IET"] + [n.upper() for n in ("agc", "msr", "taa") if getattr(self, n)])

    def train_config(self) -> TrainConfig:
        """One proxy's whole run (its schedule spans every round); rounds end with ``stop_at``."""
        return TrainConfig(steps=self.rounds * self.steps_per_round, batch_size=self.batch_size, lr=self.lr,
                           warmup_steps=self.warmup_steps, checkpoint_every=self.steps_per_round, seed=self.seed)


def initial_shards(n_rows: int, k: int, seed: int) -> list[torch.Tensor]:
    """K disjoint shards of equal size (the remainder rows go to the first shards), from a seeded permutation."""
    if n_rows < k:
        raise ValueError(f"{n_rows} rows cannot fill {k} shards")
    perm = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed))
    return [perm[i::k].sort().values for i in range(k)]


def _world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([v.detach().float().reshape(-1) for v in model.state_dict().values()])


def _unflat(model: torch.nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    out, i = {}, 0
    for name, v in model.state_dict().items():
        out[name] = flat[i:i + v.numel()].reshape(v.shape).to(v.dtype)
        i += v.numel()
    return out


def gather_in_shard_order(local: dict[int, torch.Tensor], k: int) -> list[torch.Tensor]:
    """Every shard's vector on every rank, ordered by shard (rank r holds shards r, r + world, ...)."""
    rank, world = _world()
    mine = sorted(local)
    if world == 1:
        return [local[s] for s in range(k)]
    # NCCL moves only GPU tensors (each rank's own GPU); gloo moves CPU ones. The shards come back on the CPU.
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    slots = -(-k // world)
    size = next(iter(local.values())).numel() if local else 0
    sizes = [torch.zeros(1, dtype=torch.long, device=on) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([size], device=on))
    size = int(max(s.item() for s in sizes))
    buf = torch.zeros(slots, size, device=on)
    for j, s in enumerate(mine):
        buf[j] = local[s].to(on)
    got = [torch.zeros(slots, size, device=on) for _ in range(world)]
    dist.all_gather(got, buf)
    return [got[s % world][s // world].cpu() for s in range(k)]


def average(vectors: list[torch.Tensor]) -> torch.Tensor:
    """The plain mean, summed in list order (shards are equal in size, so the paper's weights are equal)."""
    total = torch.zeros_like(vectors[0])
    for v in vectors:
        total += v
    return total / len(vectors)


def _save_round(folder: Path, r: int, record: dict) -> None:
    path = folder / "rounds" / f"round-{r:03d}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(record, tmp)
    tmp.replace(path)


def last_round(folder: Path) -> tuple[int, dict | None]:
    """(index of the last finished round, its record) or (-1, None)."""
    done = sorted((folder / "rounds").glob("round-*.pt")) if (folder / "rounds").exists() else []
    if not done:
        return -1, None
    return int(done[-1].stem.split("-")[1]), torch.load(done[-1], weights_only=True)


def _proxy_stats(state: dict, n_rows: int, n_timesteps: int) -> torch.Tensor:
    """One proxy's bank, skip counts per row and TAA counters, flattened for one gather."""
    ls = state.get("loss_state", {})
    return torch.cat([ls.get("bank", torch.zeros(n_timesteps)).float(),
                      ls.get("skips", torch.zeros(n_rows, dtype=torch.long)).float(),
                      torch.stack([ls.get("taa_steps", torch.zeros(())).float(),
                                   ls.get("taa_magnitude_sum", torch.zeros(())).float()])])


def train_iet(cfg: IETConfig, make_model, train_proxy, n_rows: int, folder: str | Path,
              stop_after_round: int | None = None, on_round=None,
              n_timesteps: int = 1000) -> dict[str, torch.Tensor]:
    """Run (or resume) IET in ``folder``; returns the final averaged weights (on every rank).

    ``make_model()`` builds a proxy (the same initial weights on every call); ``train_proxy(model, rows, cfg,
    proxy_folder, stop_at, hook, new_round)`` trains it to step ``stop_at`` on ``rows`` (e.g.
    ``memlib.testbed.digits.train_digits_model``) and returns the training state. ``on_round(r, weights, stats)``
    runs on rank 0 after each round with the averaged weights and, per shard in order, ``bank`` (K, T),
    cumulative ``skips`` (K, n_rows), ``taa_steps`` and ``taa_magnitude_sum`` (K,)."""
    folder = Path(folder)
    rank, world = _world()
    settings = {"iet": asdict(cfg), "n_rows": n_rows}
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        meta = folder / "iet.json"
        if meta.exists() and json.loads(meta.read_text()) != settings:
            raise ValueError(f"{folder} holds an IET run with other settings; move it away or choose another folder")
        meta.write_text(json.dumps(settings, indent=1))
    if world > 1:
        dist.barrier()
    done, record = last_round(folder)
    model = make_model()
    shards = record["shards"] if record else initial_shards(n_rows, cfg.shards, cfg.seed)
    weights = record["weights"] if record else _flat(model)
    own = record["own_weights"] if record else False
    exchanged = record["skips_at_exchange"] if record else torch.zeros(n_rows, dtype=torch.long)
    train_cfg = cfg.train_config()
    for r in range(done + 1, cfg.rounds):
        stop, local, stats = (r + 1) * cfg.steps_per_round, {}, {}
        for s in range(rank, cfg.shards, world):
            proxy = make_model()
            pf = folder / f"proxy-{s}"
            hook = AGCHook(cfg.agc_r, cfg.agc_beta, n_timesteps, cfg.taa_kappa) if cfg.agc else None
            # a proxy that finished this round before an interruption, or one that keeps its own weights after
            # an exchange, continues from its checkpoint; every other proxy starts from the average
            finished = (pf / "meta.json").exists() and read_meta(pf).get("step", 0) >= stop
            if finished or (own and (pf / "model.safetensors").exists()):
                load_weights(pf, proxy)
            else:
                proxy.load_state_dict(_unflat(proxy, weights))
            state = train_proxy(proxy, shards[s], replace(train_cfg, seed=cfg.seed * 1000 + s), pf, stop, hook,
                                r > 0)
            local[s] = _flat(proxy)
            stats[s] = _proxy_stats(state, n_rows, n_timesteps)
        vectors = gather_in_shard_order(local, cfg.shards)
        gathered = torch.stack(gather_in_shard_order(stats, cfg.shards))
        per_shard = {"bank": gathered[:, :n_timesteps], "skips": gathered[:, n_timesteps:n_timesteps + n_rows],
                     "taa_steps": gathered[:, -2], "taa_magnitude_sum": gathered[:, -1]}
        exchange = cfg.msr and r % 2 == 1 and r < cfg.rounds - 1
        weights = average(vectors)
        if exchange:
            now = per_shard["skips"].sum(0).round().long()             # each row's skips, all proxies
            shards = redistribute(shards, now - exchanged, cfg.msr_fraction)
            exchanged = now
        own = exchange
        if rank == 0:
            _save_round(folder, r, {"weights": weights, "shards": shards, "own_weights": own,
                                    "skips_at_exchange": exchanged})
            if on_round is not None:
                on_round(r, _unflat(model, weights), per_shard)
        if world > 1:
            dist.barrier()
        if stop_after_round is not None and r >= stop_after_round:
            break
    return _unflat(model, weights)
