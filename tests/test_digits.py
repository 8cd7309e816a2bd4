"""The sklearn-digits DDPM testbed: planted duplicates, a short training run, guided sampling."""
import numpy as np
import torch

from memlib.backends.testbed import DigitsBackend
from memlib.testbed.digits import DigitsDataConfig, make_digits_data, train_digits_model
from memlib.schedule import sd_scheduler
from memlib.testbed.model import UnconditionalConfig
from memlib.sampling import sample, seeded_noise
from memlib.train import TrainConfig


def test_digits_are_real_and_duplicates_are_labelled():
    d = make_digits_data(DigitsDataConfig(n_duplicated=5, copies=4))
    assert d.images.shape == (1797 + 5 * 3, 1, 8, 8) and d.images.min() >= -1 and d.images.max() <= 1
    assert d.duplicated.sum() == 5 * 4
    for c in np.unique(d.cluster[d.duplicated]):
        rows = np.flatnonzero(d.cluster == c)
        assert len(rows) == 4 and all(torch.equal(d.images[r], d.images[rows[0]]) for r in rows)
    again = make_digits_data(DigitsDataConfig(n_duplicated=5, copies=4))
    assert torch.equal(again.images, d.images)


def test_class_conditional_digits_model_trains_and_samples_with_guidance(tmp_path):
    d = make_digits_data(DigitsDataConfig(n_duplicated=2, copies=3, max_images=64))
    cfg = UnconditionalConfig(block_out_channels=(16, 32), num_class_embeds=10)
    unet, state = train_digits_model(d, cfg, TrainConfig(steps=3, batch_size=8, checkpoint_every=3),
                                     tmp_path / "ck", progress=False)
    assert state["step"] == 3 and (tmp_path / "ck" / "meta.json").exists()
    den = DigitsBackend(unet, n_classes=10).eps
    x = seeded_noise((1, 8, 8), [0, 1])
    out = sample(den, x, sd_scheduler(), 3, cond=torch.tensor([3, 7]), uncond=torch.tensor([10]),
                 guidance_scale=2.0)
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()
    plain = UnconditionalConfig(block_out_channels=(16, 32))
    unet2, _ = train_digits_model(d, plain, TrainConfig(steps=2, batch_size=8, checkpoint_every=2),
                                  tmp_path / "ck2", progress=False)
    out = sample(DigitsBackend(unet2).eps, x, sd_scheduler("ddpm"), 3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 8, 8)
