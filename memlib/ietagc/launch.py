"""Launch IET on the digits (Liu et al., ECCV 2024): one process per rank under ``torchrun``.

    torchrun --nproc_per_node 2 -m memlib.ietagc.launch --config run.json --folder checkpoints/iet-...
    # several machines: the same command on each, with --nnodes N --node_rank i --rdzv_endpoint host:port

``run.json`` holds ``{"iet": {...IETConfig}, "data": {...DigitsDataConfig}, "model": {...UnconditionalConfig}}``.
gloo on CPU, NCCL on GPU. Without torchrun (no WORLD_SIZE) it runs every shard in one process.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

from ..testbed.digits import DigitsDataConfig, make_digits_data, train_digits_model
from ..testbed.model import UnconditionalConfig, make_unconditional_unet
from .iet import IETConfig, last_round, train_iet


def digits_trainer(data, model_cfg: UnconditionalConfig, seed: int = 0):
    """(make_model, train_proxy) for ``train_iet`` on the digits DDPM."""
    def make_model():
        torch.manual_seed(seed)
        return make_unconditional_unet(model_cfg)

    def train_proxy(model, rows, train_cfg, folder, stop_at, hook, new_round):
        _, state = train_digits_model(data, model_cfg, train_cfg, folder, progress=False, stop_at=stop_at,
                                      unet=model, rows=rows, sample_hook=hook, new_round=new_round)
        return state

    return make_model, train_proxy


def run(spec: dict, folder: str | Path, stop_after_round: int | None = None) -> dict[str, torch.Tensor]:
    cfg = IETConfig(**spec.get("iet", {}))
    data = make_digits_data(DigitsDataConfig(**spec.get("data", {})))
    model_cfg = UnconditionalConfig(**{k: tuple(v) if isinstance(v, list) else v
                                       for k, v in spec.get("model", {}).items()})
    make_model, train_proxy = digits_trainer(data, model_cfg, cfg.seed)
    return train_iet(cfg, make_model, train_proxy, len(data.images), folder, stop_after_round)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="JSON file with iet, data and model settings")
    ap.add_argument("--folder", required=True, help="where the proxies and rounds are written (resumes)")
    ap.add_argument("--stop-after-round", type=int, default=None, help="end after this round (tests)")
    args = ap.parse_args(argv)
    spec = json.loads(Path(args.config).read_text())
    if "WORLD_SIZE" in os.environ and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        weights = run(spec, args.folder, args.stop_after_round)
        finished = last_round(Path(args.folder))[0] == IETConfig(**spec.get("iet", {})).rounds - 1
        if finished and (not dist.is_initialized() or dist.get_rank() == 0):
            from safetensors.torch import save_file
            save_file({k: v.contiguous() for k, v in weights.items()}, str(Path(args.folder) / "final.safetensors"))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
