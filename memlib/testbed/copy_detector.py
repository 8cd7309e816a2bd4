"""The copy detectors of the text testbed and of the digits DDPMs (``memlib.copydetect``: an analogue of SSCD,
Pizzi et al., CVPR 2022), each trained on the images its model trains on and calibrated on images it never saw.

- Text testbed (``load_testbed_detector``): trained on one image per training cluster of a testbed seed.
  Negatives are plain-CFG generations of the held-out prompts (combinations never trained) from that seed's
  UNet, and fresh renderings of those combinations. The threshold is the lowest at which at most 5 % of BOTH
  sets are called copies on the development half of the held-out combinations (``memlib.splits``); both
  halves' rates are kept.
- Digits (``load_digits_detector``): trained on the digits the DDPM trains on (one row per source digit).
  Negatives are the real digits it never trained on, split dev/test the same way. Generations of the shipped
  unconditional DDPM are not negatives (it copies its planted duplicates); their copy rate is recorded beside
  the Gu ratio's.

How strong the speckle augmentation must be: on the testbed, AMG Main (notebook 04's settings: c3 = 300, the
code schedule, its calibrated lambda_t; 25 DDIM steps, CFG 3) leaves its outputs a high-frequency residual
against the planted image (residual minus its sigma = 1 px Gaussian low-pass) of RMS 0.19 and 95th percentile
0.40 per pixel (plain CFG: 0.11 and 0.24; ``AMG_SPECKLE_RMS``). The testbed's speckle augmentation reaches
+-0.5 per pixel, its Gaussian noise a standard deviation of 0.3. Digits (8x8, 17 grey levels) get gentler
geometry and blur and speckle up to +-0.3 (AMG's guidance on the digits was not measured).

Checkpoints: ``checkpoints/copydetect-<t2i|digits>-<digest>/`` (float16 weights + meta.json with the threshold
and what it was trained and calibrated on). ``python -m memlib.testbed.copy_detector [--dataset ...] [--retrain]``
trains the shipped ones (a few minutes each on 2 CPU cores).
"""
from __future__ import annotations

import argparse
import functools
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import CheckpointError, load_or_build, read_meta
from ..config import Config, check_range
from ..copydetect import (KIND, AugmentConfig, CopyDetector, Descriptor, DescriptorConfig, DescriptorTrainConfig,
                          calibrate_threshold, false_copy_rate, train_descriptor)
from ..generation import GenerationConfig, generate
from ..paths import checkout_root, checkpoints_dir
from ..splits import HALVES, select
from .build import Testbed, TestbedRef
from .data import render_captions, run_digest
from .digits import DigitsDataConfig, make_digits_data
from .sources import split_unit


AMG_SPECKLE_RMS = 0.19   # measured as above; marked on notebook 00's robustness figure


@dataclass
class DetectorRecipe(Config):
    """How a detector is trained and calibrated (the checkpoint's name hashes it)."""
    descriptor: DescriptorConfig = field(default_factory=DescriptorConfig)
    train: DescriptorTrainConfig = field(default_factory=DescriptorTrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    calib_steps: int = 50             # plain-CFG generations of the held-out prompts (notebook 00's settings)
    calib_guidance: float = 3.0
    calib_gens: int = 4
    calib_seed: int = 0
    renders_per_caption: int = 4      # fresh renderings of each held-out combination
    max_false_rate: float = 0.05

    def validate(self) -> None:
        check_range("calib_gens", self.calib_gens, 1, 64)
        check_range("renders_per_caption", self.renders_per_caption, 1, 64)
        check_range("max_false_rate", self.max_false_rate, 0.0, 0.5)

    def generation_config(self) -> GenerationConfig:
        return GenerationConfig(num_steps=self.calib_steps, guidance_scale=self.calib_guidance,
                                n_gens=self.calib_gens, seed=self.calib_seed)


# per testbed preset: 'tiny' (tests, quick runs) trains and calibrates in seconds
RECIPES = {
    "default": DetectorRecipe(),
    "tiny": DetectorRecipe(train=DescriptorTrainConfig(steps=20, batch_size=32), calib_steps=5, calib_gens=2,
                           renders_per_caption=2),
}
DIGITS_RECIPE = DetectorRecipe(   # 8x8 digits of one class differ by a few pixels: a wider descriptor, longer
    # training and gentler augmentations (no pasted patch) keep held-out digits apart from training digits
    descriptor=DescriptorConfig(channels=1, image_size=8, width=32, dim=128),
    train=DescriptorTrainConfig(steps=1200),
    augment=AugmentConfig(max_shift=0.5, min_scale=0.95, brightness=0.1, contrast=0.1, saturation=0.0, max_blur=0.5,
                          max_noise=0.2, max_speckle=0.3, max_patch=0))


def unique_rows(cluster: np.ndarray) -> np.ndarray:
    """The first row of every cluster (planted duplicates once), in row order."""
    return np.sort(np.unique(np.asarray(cluster), return_index=True)[1])


def heldout_texts(data, half: str) -> list[str]:
    """The held-out prompts (combinations never trained) in ``half`` of the split."""
    return [p.text for p in select(data.prompts_in("heldout"), half, split_unit)]


def heldout_renders(texts: list[str], recipe: DetectorRecipe, size: int) -> torch.Tensor:
    """Fresh renderings of the combinations ``texts`` name, in [-1, 1] (never training images)."""
    return render_captions(texts, recipe.renders_per_caption, seed=recipe.calib_seed + 1, size=size)


def heldout_negatives(tb: Testbed, recipe: DetectorRecipe, half: str, progress: bool = False) -> dict:
    """{'generations': plain-CFG generations of the held-out prompts in ``half``, 'renders': fresh renderings
    of their combinations}, images in [-1, 1]."""
    from ..backends.testbed import TestbedBackend

    texts = heldout_texts(tb.data, half)
    gen = generate(TestbedBackend(tb.model, tb), texts, recipe.generation_config(), progress=progress)
    return {"generations": gen.images.flatten(0, 1) * 2 - 1,
            "renders": heldout_renders(texts, recipe, tb.data.images.shape[-1])}


def _calibrate(detector: CopyDetector, references: torch.Tensor, negatives: dict, max_false_rate: float) -> dict:
    """Set the threshold from the dev half's negatives; returns the rates and counts of every half and set."""
    refs = detector.embed(references)
    scores = {h: {k: detector.nearest(v, refs)[1] for k, v in sets.items()} for h, sets in negatives.items()}
    detector.threshold = calibrate_threshold(*scores["dev"].values(), max_false_rate=max_false_rate)
    return {"max_false_rate": max_false_rate,
            "n_negatives": {h: {k: len(v) for k, v in s.items()} for h, s in scores.items()},
            "false_copy_rates": {h: {k: false_copy_rate(v, detector.threshold) for k, v in s.items()}
                                 for h, s in scores.items()}}


def _load_or_train(folder, recipe: DetectorRecipe, trained_on: dict, images_fn, negatives_fn, extra_fn=None,
                   retrain: bool = False, progress: bool = True) -> CopyDetector:
    """The detector in ``folder``, else trained on ``images_fn()`` -> (train images, references) and calibrated
    on ``negatives_fn()`` -> {half: {set: images}}; ``extra_fn(detector)`` adds records to ``trained_on``."""
    descriptor = Descriptor(recipe.descriptor)

    def finished(meta: dict) -> bool:
        return meta.get("kind") == KIND and "threshold" in meta and meta.get("step") == recipe.train.steps

    def build():
        t0 = time.time()
        images, references = images_fn()
        model, state = train_descriptor(images, folder, recipe.descriptor, recipe.train, recipe.augment,
                                        {"recipe": recipe.to_dict()}, progress=progress)
        det = CopyDetector(model, 0.0, dict(trained_on, n_images=len(images)))
        det.trained_on["calibration"] = _calibrate(det, references, negatives_fn(), recipe.max_false_rate)
        if extra_fn is not None:
            det.trained_on.update(extra_fn(det))
        det.trained_on["train_seconds"] = round(state["seconds"], 1)
        det.trained_on["build_seconds"] = round(time.time() - t0, 1)
        det.save(folder, {"recipe": recipe.to_dict(), "step": state["step"],
                          "final_loss": float(np.mean(state["history"][-50:]))})

    if not retrain:
        _copy_shipped(folder, finished)
    load_or_build(folder, descriptor, finished, build, retrain)
    return CopyDetector.load(folder)


def _copy_shipped(folder: Path, finished) -> None:
    """When ``folder`` (e.g. a quick run's or a test's checkpoints) lacks the detector but the checkout ships it
    under the same name, copy the shipped one in: training it again gives the same weights after minutes."""
    root = checkout_root()
    shipped = root / "checkpoints" / folder.name if root is not None else None
    if folder.exists() or shipped is None or not shipped.is_dir() or shipped.resolve() == folder.resolve():
        return
    try:
        meta = read_meta(shipped)
    except CheckpointError:
        return
    if finished(meta):
        tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        shutil.copytree(shipped, tmp)
        os.replace(tmp, folder)


def detector_folder(ref: TestbedRef):
    return checkpoints_dir() / f"copydetect-t2i-{run_digest(ref, RECIPES[ref.preset])}"


def digits_detector_folder(data_cfg: DigitsDataConfig | None = None):
    return checkpoints_dir() / f"copydetect-digits-{run_digest(data_cfg or DigitsDataConfig(), DIGITS_RECIPE)}"


def load_testbed_detector(ref: TestbedRef | None = None, retrain: bool = False, progress: bool = True,
                          device: torch.device | str | None = None) -> CopyDetector:
    """The copy detector of testbed ``ref`` (its preset picks the recipe), loaded, else trained and calibrated
    (on the CPU: its weights and threshold are a shipped instrument), then run on ``device``."""
    ref = ref or TestbedRef()
    recipe, folder = RECIPES[ref.preset], detector_folder(ref)
    tb_box: list[Testbed] = []

    def testbed() -> Testbed:
        if not tb_box:
            tb_box.append(ref.load(progress=progress))
        return tb_box[0]

    def images():
        data = testbed().data
        return data.images[unique_rows(data.cluster)], data.images

    def negatives():
        return {h: heldout_negatives(testbed(), recipe, h, progress) for h in HALVES}

    trained_on = {"dataset": "testbed", "testbed": ref.to_dict(),
                  "negatives": "plain-CFG generations of held-out prompts + renderings of held-out combinations"}

    def extra(det):
        tb = testbed()
        return {"checkpoint": tb.folder.name, "data_fingerprint": tb.meta["data_fingerprint"]}

    return _load_or_train(folder, recipe, trained_on, images, negatives, extra, retrain, progress).to(device)


def load_digits_detector(retrain: bool = False, progress: bool = True, n_generations: int = 0,
                         device: torch.device | str | None = None) -> CopyDetector:
    """The copy detector of the digits DDPMs' training set (``memlib.testbed.digits``, default data), loaded,
    else trained and calibrated on the held-out real digits. ``n_generations`` > 0 also records its copy rate
    on that many samples of the shipped digits DDPM (which loads, or trains, that model)."""
    data_cfg, recipe, folder = DigitsDataConfig(), DIGITS_RECIPE, digits_detector_folder()
    data = make_digits_data(data_cfg)
    held = [str(i) for i in range(len(data.heldout_images))]

    def negatives():
        return {h: {"heldout_digits": data.heldout_images[[int(i) for i in select(held, h)]]} for h in HALVES}

    def extra(det):
        if n_generations <= 0:
            return {}
        return {"ddpm_generations": _digits_generation_rates(det, data, n_generations, progress)}

    trained_on = {"dataset": "digits", "data": data_cfg.to_dict(),
                  "negatives": "real digits the DDPM never trained on"}
    return _load_or_train(folder, recipe, trained_on, lambda: (data.images[unique_rows(data.cluster)], data.images),
                          negatives, extra, retrain, progress).to(device)


def _digits_generation_rates(det: CopyDetector, data, n: int, progress: bool) -> dict:
    """Copy rates of ``n`` DDIM samples (50 steps) of the shipped unconditional digits DDPM: the detector's, the
    pixel Gu ratio's and the planted duplicates' share."""
    from ..backends.testbed import DigitsBackend
    from ..metrics import ReplicationIndex
    from ..sampling import sample, seeded_rows
    from ..schedule import sd_scheduler
    from .digits import load_digits_model

    unet, n_classes, meta = load_digits_model(progress=progress)
    backend = DigitsBackend(unet, n_classes)
    x_T, gens = seeded_rows(backend.sample_shape, range(n), backend.device)
    with torch.no_grad():
        x = sample(backend.eps, x_T, sd_scheduler("ddim"), 50, cond=None, uncond=None, generator=gens).clamp(-1, 1)
    nn, _ = det.nearest(x, data.images)
    gu = ReplicationIndex(data.images, data.cluster).query(x)
    return {"checkpoint": meta["folder"], "n": n, "detector_copy_rate": det.copy_rate(x, data.images),
            "pixel_gu_rate": float(gu.replicated().mean()),
            "detector_copies_of_planted": float((det.is_copy(x, data.images) & data.duplicated[nn]).mean())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m memlib.testbed.copy_detector",
                                 description="train and calibrate the shipped copy detectors")
    ap.add_argument("--dataset", choices=("testbed", "digits", "all"), default="all")
    ap.add_argument("--retrain", action="store_true", help="train again even if a finished checkpoint exists")
    a = ap.parse_args(argv)
    digits = functools.partial(load_digits_detector, n_generations=500)
    for name, make in (("testbed", load_testbed_detector), ("digits", digits)):
        if a.dataset in (name, "all"):
            det = make(retrain=a.retrain)
            cal = det.trained_on["calibration"]
            print(f"{name}: threshold {det.threshold:.4f}, false-copy rates {cal['false_copy_rates']}, "
                  f"trained in {det.trained_on.get('train_seconds')} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
