"""Launch IET-AGC+ training on the digits (Liu et al., ECCV 2024; Guan et al., arXiv 2502.09434): one process
per rank under ``torchrun`` for the IET runs, one process for the centralized baseline.

    torchrun --nproc_per_node 2 -m memlib.ietagc.launch --config run.json --folder checkpoints/ietagc-...
    # several machines: the same command on each, with --nnodes N --node_rank i --rdzv_endpoint host:port

``run.json`` holds ``{"iet": {...IETConfig}, "data": {...DigitsDataConfig}, "model": {...UnconditionalConfig},
"probe": {"n_samples": 256}}``, or ``"baseline": {...TrainConfig}`` and ``"frontier": [steps]`` instead of
``"iet"`` for the baseline (one model on all rows, probed and kept in float16 at each frontier step). gloo on
CPU, NCCL on GPU; each rank gets an equal share of the CPU threads. Without torchrun (no WORLD_SIZE) an IET run
trains every shard in one process. What ships: the final weights (``final/``, float16) and ``progress.json``
(``memlib.ietagc.probe``); proxies, rounds, the baseline's frontier weights and training state stay local (the
weights budget), their probes ship.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

from ..checkpoint import load_weights, read_meta, save_checkpoint
from ..device import resolve_device
from ..testbed.digits import DigitsDataConfig, image_loss, make_digits_data, train_digits_model
from ..testbed.model import UnconditionalConfig, make_unconditional_unet
from ..train import TrainConfig
from .iet import IETConfig, last_round, train_iet
from .probe import Probe, read_progress, update_progress
from .taa import TAAStep


def model_config(spec: dict) -> UnconditionalConfig:
    return UnconditionalConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.get("model", {}).items()})


def digits_trainer(data, model_cfg: UnconditionalConfig, seed: int = 0, taa_base: int | None = None, device=None):
    """(make_model, train_proxy) for ``train_iet`` on the digits DDPM; ``taa_base`` adds TAA's extra step;
    proxies train on ``device`` (default: the CPU)."""
    def make_model():
        torch.manual_seed(seed)
        return make_unconditional_unet(model_cfg)

    def train_proxy(model, rows, train_cfg, folder, stop_at, hook, new_round):
        extra = None
        if hook is not None and taa_base is not None:
            extra = TAAStep(hook, data.images, image_loss(model), train_cfg.batch_size, taa_base)
        _, state = train_digits_model(data, model_cfg, train_cfg, folder, progress=False, stop_at=stop_at,
                                      unet=model, rows=rows, sample_hook=hook, new_round=new_round,
                                      extra_step=extra, device=device)
        return state

    return make_model, train_proxy


def _ship(folder: Path, weights: dict, model_cfg: UnconditionalConfig, meta: dict) -> None:
    unet = make_unconditional_unet(model_cfg)
    unet.load_state_dict(weights)
    save_checkpoint(folder, unet, meta, dtype=torch.float16)


def run(spec: dict, folder: str | Path, stop_after_round: int | None = None,
        device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Train (or resume) the run ``spec`` describes in ``folder`` on ``device`` (default: the CPU; not part of the
    spec, whose digest names the run's folder); returns the final weights."""
    folder = Path(folder)
    if "finetune" in spec:        # the text-to-image fine-tuning analogue (memlib.ietagc.finetune)
        from .finetune import run_finetune
        return run_finetune(spec, folder, stop_after_round, device)
    data = make_digits_data(DigitsDataConfig(**spec.get("data", {})))
    model_cfg = model_config(spec)
    probe_spec = spec.get("probe", {})
    n_probe = int(probe_spec.get("n_samples", 256))
    rank = dist.get_rank() if dist.is_initialized() else 0
    probe = Probe(data, n_probe, int(probe_spec.get("steps", 50)), n_noise=int(probe_spec.get("n_noise", 4))) \
        if n_probe and rank == 0 else None
    if "baseline" in spec:
        if dist.is_initialized() and dist.get_world_size() > 1:
            raise ValueError("the baseline is one model: run it without torchrun (python -m memlib.ietagc.launch)")
        return _run_baseline(spec, folder, data, model_cfg, probe, device)
    cfg = IETConfig(**spec["iet"])
    make_model, train_proxy = digits_trainer(data, model_cfg, cfg.seed, cfg.taa_base if cfg.taa else None, device)

    def on_round(r, weights, stats):
        if probe is None:
            return
        unet = make_model().to(device or "cpu")   # probed where it trained
        unet.load_state_dict(weights)
        entry = {"round": r, "probe_visits": (r + 1) * cfg.steps_per_round * cfg.batch_size * cfg.shards,
                 **probe.model(unet), **probe.shards(stats, last=r == cfg.rounds - 1)}
        entry["taa_visits"] = int(sum(entry["taa_steps"])) * cfg.batch_size
        update_progress(folder, f"round-{r:03d}", entry)

    weights = train_iet(cfg, make_model, train_proxy, len(data.images), folder, stop_after_round, on_round)
    if last_round(folder)[0] == cfg.rounds - 1 and rank == 0:
        _ship(folder / "final", weights, model_cfg, {"kind": "ietagc-digits", "run": spec, "label": cfg.label})
    return weights


def _run_baseline(spec, folder: Path, data, model_cfg, probe, device=None) -> dict[str, torch.Tensor]:
    tc = TrainConfig(**spec["baseline"])
    steps = sorted(set(int(s) for s in spec.get("frontier", [])) | {tc.steps})
    if steps[0] < 1 or steps[-1] > tc.steps:
        raise ValueError(f"frontier steps {steps} must lie in 1..{tc.steps}")
    torch.manual_seed(tc.seed)
    unet = make_unconditional_unet(model_cfg)
    done = read_progress(folder)
    for step in steps:
        out = folder / "frontier" / f"step-{step:05d}"
        if f"step-{step:05d}" in done and (out / "meta.json").exists() and read_meta(out).get("step") == step:
            continue
        train_digits_model(data, model_cfg, tc, folder / "train", progress=True, stop_at=step, unet=unet,
                           device=device)
        save_checkpoint(out, unet, {"kind": "ietagc-digits-baseline", "run": spec, "step": step},
                        dtype=torch.float16)
        if probe is not None:
            update_progress(folder, f"step-{step:05d}", {"step": step, "probe_visits": step * tc.batch_size,
                                                         **probe.model(unet)})
    if not (folder / "final" / "meta.json").exists():
        load_weights(folder / "train", unet)          # the last step, also when every probe had been done
        save_checkpoint(folder / "final", unet, {"kind": "ietagc-digits-baseline", "run": spec, "step": tc.steps},
                        dtype=torch.float16)
    return {k: v.detach().clone() for k, v in unet.state_dict().items()}


def rank_device(device: str | None) -> torch.device | None:
    """``device`` for this process: a bare 'cuda' under torchrun is the rank's own GPU (cuda:LOCAL_RANK)."""
    if device is None:
        return None
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]) % max(1, torch.cuda.device_count()))
    return dev


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="JSON file with the run's settings (see above)")
    ap.add_argument("--folder", required=True, help="where the run is written (resumes)")
    ap.add_argument("--stop-after-round", type=int, default=None, help="end after this round (tests)")
    ap.add_argument("--device", default=None, help="where the models train: cpu (default), cuda, cuda:1, mps; "
                    "under torchrun 'cuda' means each rank's own GPU (cuda:LOCAL_RANK)")
    args = ap.parse_args(argv)
    spec = json.loads(Path(args.config).read_text())
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    device = rank_device(args.device)
    if "WORLD_SIZE" in os.environ and not dist.is_initialized():
        on_gpu = device is not None and device.type == "cuda"
        if on_gpu:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if on_gpu else "gloo")   # the rounds' gathers run where the proxies train
    try:
        run(spec, args.folder, args.stop_after_round, device)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
