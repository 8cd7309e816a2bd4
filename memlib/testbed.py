"""The embedded testbed: data + text-to-image model + training, behind one ``load_or_train`` call.

Checkpoints live in ``checkpoints/<name>-<digest>/`` where the digest covers every data, model and training
setting, so a changed parameter never silently reuses weights trained for another. The default checkpoint is
shipped with the repository (made by ``notebooks/00_testbed.ipynb`` with its default parameters).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import CheckpointError, load_weights, read_meta, verify_checkpoint
from .config import Config, ConfigError, check_range
from .models import TextToImageConfig, TextToImageModel
from .paths import checkpoints_dir
from .testbed_data import GENERATOR_VERSION, TestbedData, TestbedDataConfig, make_testbed_data
from .train import TrainConfig, text_to_image_loss, train_loop


def run_digest(*configs) -> str:
    """Short hash of the configs and the data generator's version (so a redesigned generator gets new folders)."""
    blob = json.dumps([GENERATOR_VERSION] + [type(c).__name__ for c in configs] + [c.to_dict() for c in configs],
                      sort_keys=True, default=list).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


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
                  stop_at: int | None = None, data: TestbedData | None = None) -> Testbed:
    """Load the finished checkpoint for these settings, else train (resuming an unfinished run).

    A corrupt checkpoint is detected by its hash, reported with a warning and rebuilt.
    """
    data_cfg, model_cfg, train_cfg = data_cfg or TestbedDataConfig(), model_cfg or TextToImageConfig(), \
        train_cfg or TrainConfig()
    torch.manual_seed(train_cfg.seed)
    data = data if data is not None else make_testbed_data(data_cfg)
    model = TextToImageModel(model_cfg)
    folder = checkpoint_folder(data_cfg, model_cfg, train_cfg)
    run = {"data": data_cfg.to_dict(), "model": model_cfg.to_dict(), "train": train_cfg.to_dict()}
    meta = {"run": json.loads(json.dumps(run, default=list)), "kind": "testbed-text-to-image",
            "data_fingerprint": data_fingerprint(data)}
    if folder.exists() and not retrain:
        try:
            m = verify_checkpoint(folder)
            if m.get("data_fingerprint") != meta["data_fingerprint"]:
                raise CheckpointError(f"checkpoint {folder} was trained on other data (the generator changed); "
                                      f"it will be retrained")
            if m.get("step") == train_cfg.steps:
                load_weights(folder, model)
                model.eval()
                return Testbed(data, model, folder, m)
        except CheckpointError as e:
            warnings.warn(f"{e}; rebuilding it from scratch", stacklevel=2)
            corrupt = folder.with_name(folder.name + ".corrupt")
            shutil.rmtree(corrupt, ignore_errors=True)
            folder.rename(corrupt)
    elif folder.exists() and retrain:
        shutil.rmtree(folder)
    if model_cfg.text_pretrain_steps:  # SD-style: a pretrained, frozen text encoder (memlib.pretrained_text)
        from .clip_eval import load_or_train_clip
        from .pretrained_text import load_clip_text_tower

        clip = load_or_train_clip(data, text_tower_clip_config(model_cfg, train_cfg.seed), meta["data_fingerprint"],
                                  progress=progress)
        load_clip_text_tower(model.text_encoder, clip.model)
        meta["text_encoder_from"] = clip.meta.get("sha256", "")
    tok = model.tokenizer
    ids = tok(data.captions)
    loss_fn = text_to_image_loss(model, data.images, ids, tok([""])[0], train_cfg.cond_dropout)
    state = train_loop(model, loss_fn, len(data), train_cfg, folder, meta, progress=progress, stop_at=stop_at)
    return Testbed(data, model, folder, read_meta(folder), state)


def text_tower_clip_config(model_cfg: TextToImageConfig, seed: int):
    """The testbed CLIP whose text tower becomes ``model_cfg``'s frozen text encoder. With default settings it is
    the same run (same checkpoint) as notebook 00's evaluation CLIP, as SD v1 is often scored with the CLIP
    ViT-L/14 it conditions on."""
    from .clip_eval import ClipConfig

    if model_cfg.text_heads != 4 or model_cfg.text_intermediate != 4 * model_cfg.cross_attention_dim:
        raise ConfigError("a pretrained text encoder needs text_heads = 4 and text_intermediate = "
                          "4 * cross_attention_dim (the testbed CLIP's text tower); or set text_pretrain_steps = 0")
    return ClipConfig(steps=model_cfg.text_pretrain_steps, seed=seed, image_size=model_cfg.image_size,
                      text_width=model_cfg.cross_attention_dim, text_layers=model_cfg.text_layers,
                      context_length=model_cfg.context_length)


PRESETS = {  # data presets: 'default' is the shipped testbed, 'tiny' runs the pipeline in seconds (tests)
    "default": {},
    "tiny": dict(renderings_per_combo=1, n_verbatim=4, verbatim_copies=4, knob_copies=(2,),
                 knob_images_per_level=1, n_image_dup=2, image_dup_captions=3, n_caption_dup=2,
                 caption_dup_images=3, n_random_prompts=4),
}


@dataclass
class TestbedNotebookConfig(Config):
    """Parameters of notebooks/00_testbed.ipynb."""
    __test__ = False  # not a pytest test class
    data_preset: str = "default"     # 'default' (shipped checkpoint) or 'tiny' (seconds; tests)
    seed: int = 0                    # data and training seed
    train_steps: int = 2800          # testbed training steps (~0.65 s each on 2 CPU cores)
    train_batch_size: int = 64
    clip_steps: int = 1500           # contrastive steps of the testbed CLIP (its text tower: the frozen encoder)
    retrain: bool = False            # ignore a finished checkpoint and train again
    n_gens: int = 4                  # generations per evaluated prompt
    num_steps: int = 50              # DDIM steps
    guidance_scale: float = 3.0      # CFG scale (3 replicates more than 7.5 at this scale; see shared notes)
    gen_batch_size: int = 128
    max_prompts_per_group: int = 0   # 0 = every prompt of each group
    progress: bool = True            # progress bars

    def validate(self) -> None:
        if self.data_preset not in PRESETS:
            raise ConfigError(f"parameter 'data_preset' = {self.data_preset!r}; choose one of {sorted(PRESETS)}")
        check_range("train_steps", self.train_steps, 1)
        check_range("clip_steps", self.clip_steps, 1)
        check_range("max_prompts_per_group", self.max_prompts_per_group, 0)
        check_range("train_batch_size", self.train_batch_size, 1, 4096)
        check_range("gen_batch_size", self.gen_batch_size, 1)
        self.generation_config()  # checks n_gens, num_steps and guidance_scale under the same names

    def data_config(self) -> TestbedDataConfig:
        return TestbedDataConfig(seed=self.seed, **PRESETS[self.data_preset])

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.train_steps, batch_size=self.train_batch_size, seed=self.seed,
                           checkpoint_every=min(TrainConfig.checkpoint_every, self.train_steps))

    def model_config(self) -> TextToImageConfig:
        """The text-to-image model, its frozen text encoder taken from the CLIP this config trains."""
        return TextToImageConfig(text_pretrain_steps=self.clip_steps)

    def generation_config(self):
        from .generate import GenerationConfig
        return GenerationConfig(num_steps=self.num_steps, guidance_scale=self.guidance_scale, n_gens=self.n_gens,
                                batch_size=self.gen_batch_size, seed=self.seed)

    def clip_config(self):
        from .clip_eval import ClipConfig
        return ClipConfig(steps=self.clip_steps, seed=self.seed)


def load_testbed(cfg: TestbedNotebookConfig | None = None, progress: bool = True):
    """(Testbed, ClipScorer) for a notebook config: loads shipped checkpoints or trains them."""
    from .clip_eval import load_or_train_clip

    cfg = cfg or TestbedNotebookConfig()
    tb = load_or_train(cfg.data_config(), cfg.model_config(), cfg.train_config(), retrain=cfg.retrain,
                       progress=progress)
    clip = load_or_train_clip(tb.data, cfg.clip_config(), tb.meta["data_fingerprint"], progress=progress)
    return tb, clip


def load_method_testbed(cfg, progress: bool = True) -> Testbed:
    """The notebook-00 testbed a method notebook's config names (its ``data_preset``, ``train_steps``,
    ``clip_steps`` and ``seed``), without the evaluation CLIP."""
    nb = TestbedNotebookConfig(data_preset=cfg.data_preset, train_steps=cfg.train_steps, clip_steps=cfg.clip_steps,
                               seed=cfg.seed)
    return load_or_train(nb.data_config(), nb.model_config(), nb.train_config(), progress=progress)
