"""The embedded testbed: data + text-to-image model + training, behind one ``load_or_train`` call.

Checkpoints live in ``checkpoints/<name>-<digest>/`` where the digest covers every data, model and training
setting, so a changed parameter never silently reuses weights trained for another. The default checkpoint is
shipped with the repository (made by ``notebooks/00_testbed.ipynb`` with its default parameters).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, load_or_build, note_use
from ..config import Config, ConfigError, check_range
from ..paths import checkpoints_dir
from ..train import TrainConfig, text_to_image_loss, train_loop
from .data import TestbedData, TestbedDataConfig, make_testbed_data, run_digest
from .model import TextToImageConfig, TextToImageModel


def data_fingerprint(data: TestbedData) -> str:
    """Hash of the exact images and captions, so a changed data generator invalidates old checkpoints."""
    h = hashlib.sha256(data.images.numpy().tobytes())
    h.update("\n".join(data.captions).encode())
    return h.hexdigest()[:16]


@dataclass
class Testbed:
    __test__ = False  # not a pytest test class
    data: TestbedData
    model: TextToImageModel
    folder: Path
    meta: dict
    train_state: dict | None = None


def checkpoint_folder(data_cfg: TestbedDataConfig, model_cfg: TextToImageConfig, train_cfg: TrainConfig) -> Path:
    return checkpoints_dir() / f"t2i-{run_digest(data_cfg, model_cfg, train_cfg)}"


def load_or_train(data_cfg: TestbedDataConfig | None = None, model_cfg: TextToImageConfig | None = None,
                  train_cfg: TrainConfig | None = None, retrain: bool = False, progress: bool = True,
                  stop_at: int | None = None, data: TestbedData | None = None,
                  device: torch.device | str | None = None) -> Testbed:
    """Load the finished checkpoint for these settings, else train (resuming an unfinished run); a corrupt
    checkpoint is set aside and rebuilt (``memlib.checkpoint.load_or_build``). ``device``: where the model trains
    and is returned (default: the CPU); the weights are the same wherever they load."""
    data_cfg, model_cfg, train_cfg = data_cfg or TestbedDataConfig(), model_cfg or TextToImageConfig(), \
        train_cfg or TrainConfig()
    torch.manual_seed(train_cfg.seed)
    data = data if data is not None else make_testbed_data(data_cfg)
    model = TextToImageModel(model_cfg)
    folder = checkpoint_folder(data_cfg, model_cfg, train_cfg)
    run = {"data": data_cfg.to_dict(), "model": model_cfg.to_dict(), "train": train_cfg.to_dict()}
    meta = {"run": json.loads(json.dumps(run, default=list)), "kind": "testbed-text-to-image",
            "data_fingerprint": data_fingerprint(data)}

    def is_finished(m: dict) -> bool:
        if m.get("data_fingerprint") != meta["data_fingerprint"]:
            raise CheckpointError(f"checkpoint {folder} was trained on other data (the data generator changed)")
        return m.get("step") == train_cfg.steps

    def train():
        return _train(model, data, model_cfg, train_cfg, folder, meta, progress, stop_at, device)

    m, state = load_or_build(folder, model, is_finished, train, retrain)
    if state is None and m.get("part") == "unet":  # a UNet-only checkpoint: the frozen encoder comes from its CLIP
        tower = _load_text_tower(model, data, model_cfg, train_cfg, meta["data_fingerprint"], progress)
        if tower != m.get("text_encoder_from"):
            raise CheckpointError(f"checkpoint {folder} was trained on the text encoder of CLIP "
                                  f"{str(m.get('text_encoder_from'))[:12]}…, but the testbed CLIP now is {tower[:12]}…; "
                                  f"restore that CLIP checkpoint or retrain (retrain=True)")
    if device is not None:
        model.to(device)
    return Testbed(data, model.eval(), folder, m, state)


def _load_text_tower(model, data, model_cfg, train_cfg, data_fingerprint, progress, device=None) -> str:
    """Put the testbed CLIP's text tower into ``model`` (SD-style frozen encoder); returns the CLIP's sha256."""
    from .clip import load_or_train_clip
    from .text_tower import load_clip_text_tower

    clip = load_or_train_clip(data, text_tower_clip_config(model_cfg, train_cfg.seed), data_fingerprint,
                              progress=progress, device=device)
    load_clip_text_tower(model.text_encoder, clip.model)
    return clip.meta.get("sha256", "")


def _train(model, data, model_cfg, train_cfg, folder, meta, progress, stop_at, device=None):
    part = None
    if model_cfg.text_pretrain_steps:  # SD-style: a pretrained, frozen text encoder (memlib.testbed.text_tower)
        meta["text_encoder_from"] = _load_text_tower(model, data, model_cfg, train_cfg, meta["data_fingerprint"],
                                                     progress, device)
        part = "unet"  # the encoder ships once, inside its CLIP checkpoint
    tok = model.tokenizer
    ids = tok(data.captions)
    loss_fn = text_to_image_loss(model, data.images, ids, tok([""])[0], train_cfg.cond_dropout)
    return train_loop(model, loss_fn, len(data), train_cfg, folder, meta, progress=progress, stop_at=stop_at,
                      part=part, device=device)


def text_tower_clip_config(model_cfg: TextToImageConfig, seed: int):
    """The testbed CLIP whose text tower becomes ``model_cfg``'s frozen text encoder. With default settings it is
    the same run (same checkpoint) as notebook 00's evaluation CLIP, as SD v1 is often scored with the CLIP
    ViT-L/14 it conditions on."""
    from .clip import ClipConfig

    if model_cfg.text_heads != 4 or model_cfg.text_intermediate != 4 * model_cfg.cross_attention_dim:
        raise ConfigError("a pretrained text encoder needs text_heads = 4 and text_intermediate = "
                          "4 * cross_attention_dim (the testbed CLIP's text tower); or set text_pretrain_steps = 0")
    return ClipConfig(steps=model_cfg.text_pretrain_steps, seed=seed, image_size=model_cfg.image_size,
                      text_width=model_cfg.cross_attention_dim, text_layers=model_cfg.text_layers,
                      context_length=model_cfg.context_length)


def _finished_meta(folder: Path, steps: int) -> dict | None:
    """The metadata of a checkpoint trained for ``steps`` steps whose weights file is there, else None."""
    note_use(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if meta.get("step") == steps and (folder / "model.safetensors").is_file() else None


PRESETS = {  # data presets: 'default' is the shipped testbed, 'tiny' runs the pipeline in seconds (tests)
    "default": {},
    "tiny": dict(renderings_per_combo=1, n_verbatim=4, verbatim_copies=4, knob_copies=(2,),
                 knob_images_per_level=1, n_image_dup=2, image_dup_captions=3, n_caption_dup=2,
                 caption_dup_images=3, n_random_prompts=4),
}


@dataclass
class TestbedRef(Config):
    """Which trained testbed a notebook uses. Every method config embeds one as ``testbed`` (flat notebook
    parameters ``testbed_preset``, ``testbed_seed``, ...); the generation seed is a separate parameter."""
    __test__ = False  # not a pytest test class
    preset: str = "default"          # data preset: 'default' (shipped checkpoint) or 'tiny' (seconds; tests)
    seed: int = 0                    # data and training seed
    train_steps: int = 2800          # UNet training steps (~0.65 s each on 2 CPU cores)
    batch_size: int = 64             # UNet training batch size
    clip_steps: int = 1500           # contrastive steps of the testbed CLIP (its text tower: the frozen encoder)

    def validate(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"parameter 'preset' = {self.preset!r}; choose one of {sorted(PRESETS)}")
        check_range("train_steps", self.train_steps, 1)
        check_range("clip_steps", self.clip_steps, 1)
        check_range("batch_size", self.batch_size, 1, 4096)

    def data_config(self) -> TestbedDataConfig:
        return TestbedDataConfig(seed=self.seed, **PRESETS[self.preset])

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.train_steps, batch_size=self.batch_size, seed=self.seed,
                           checkpoint_every=min(TrainConfig.checkpoint_every, self.train_steps))

    def model_config(self) -> TextToImageConfig:
        """The text-to-image model, its frozen text encoder taken from the CLIP this reference trains."""
        return TextToImageConfig(text_pretrain_steps=self.clip_steps)

    def clip_config(self):
        from .clip import ClipConfig
        return ClipConfig(steps=self.clip_steps, seed=self.seed)

    def missing_weights(self) -> list[Path]:
        """The checkpoint folders ``load`` would have to train (no finished weights in them), read from their
        files alone: nothing is loaded, trained or created. [] when the testbed is ready to load."""
        from .clip import clip_folder

        folder = checkpoint_folder(self.data_config(), self.model_config(), self.train_config())
        meta = _finished_meta(folder, self.train_steps)
        if meta is None:
            return [folder]
        if meta.get("part") != "unet":   # a full model holds its text encoder
            return []
        clip = clip_folder(text_tower_clip_config(self.model_config(), self.seed), self.data_config())
        return [] if _finished_meta(clip, self.clip_steps) else [clip]

    def load(self, retrain: bool = False, progress: bool = True, device: torch.device | str | None = None) -> Testbed:
        """The trained text-to-image testbed (shipped checkpoint, else trained and saved), on ``device`` (default:
        the CPU)."""
        return load_or_train(self.data_config(), self.model_config(), self.train_config(), retrain=retrain,
                             progress=progress, device=device)

    def load_clip(self, tb: Testbed, progress: bool = True, device: torch.device | str | None = None):
        """The testbed CLIP (scores, retrieval, Fréchet features) for ``tb``'s data, on ``device``."""
        from .clip import load_or_train_clip
        return load_or_train_clip(tb.data, self.clip_config(), tb.meta["data_fingerprint"], progress=progress,
                                  device=device)
