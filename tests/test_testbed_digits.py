"""The sklearn-digits DDPM testbed: planted duplicates, a short training run, guided sampling."""
import numpy as np
import pytest
import torch

from memlib.backends.testbed import DigitsBackend
from memlib.testbed.digits import DigitsDataConfig, make_digits_data, train_digits_model
from memlib.schedule import sd_scheduler
from memlib.testbed.model import UnconditionalConfig
from memlib.sampling import sample, seeded_noise
from memlib.train import TrainConfig


def test_digits_are_real_and_duplicates_are_labelled():
    d = make_digits_data(DigitsDataConfig(n_duplicated=5, copies=4))
    n_held = round(0.15 * 1797)
    assert d.heldout_images.shape == (n_held, 1, 8, 8) and len(d.heldout_labels) == n_held
    assert d.images.shape == (1797 - n_held + 5 * 3, 1, 8, 8) and d.images.min() >= -1 and d.images.max() <= 1
    # the held-out digits are exactly the source digits no training row comes from (the reference is unseen)
    unseen = np.setdiff1d(np.arange(1797), d.cluster)
    assert len(unseen) == n_held
    from sklearn.datasets import load_digits
    real = torch.from_numpy(load_digits().images.astype(np.float32) / 16.0 * 2 - 1)
    torch.testing.assert_close(d.heldout_images[:, 0], real[unseen])
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
    backend = DigitsBackend(unet, n_classes=10)
    den = backend.eps
    x = seeded_noise((1, 8, 8), [0, 0])  # the same noise twice: only the label tells the two apart
    with torch.no_grad():
        e = den(x, torch.tensor(500), torch.tensor([3, 7]))
        null = den(x, torch.tensor(500), backend.labels(None).expand(2))
    assert not torch.allclose(e[0], e[1], atol=1e-4), "the class label must change the noise prediction"
    assert not torch.allclose(e[0], null[0], atol=1e-4), "a label must differ from the null label"
    cond, uncond = backend.labels([3, 7]), backend.labels(None)
    run = lambda s: sample(den, x, sd_scheduler(), 3, cond=cond, uncond=uncond, guidance_scale=s)
    out, unguided, plain = run(3.0), run(0.0), run(1.0)
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()
    assert not torch.allclose(out[0], out[1], atol=1e-4), "different labels must give different samples"
    assert not torch.allclose(out, plain, atol=1e-4), "guidance 3 must differ from the conditional model alone"
    # guidance 0 is the unconditional model: the label no longer matters
    torch.testing.assert_close(unguided[0], unguided[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(unguided, sample(den, x, sd_scheduler(), 3, uncond=uncond), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="outside"):
        backend.labels([10])
    plain_cfg = UnconditionalConfig(block_out_channels=(16, 32))
    unet2, _ = train_digits_model(d, plain_cfg, TrainConfig(steps=2, batch_size=8, checkpoint_every=2),
                                  tmp_path / "ck2", progress=False)
    out = sample(DigitsBackend(unet2).eps, x, sd_scheduler("ddpm"), 3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="unconditional"):
        DigitsBackend(unet2).labels([3])
