"""The copy detector's core (memlib.copydetect): calibration, nearest neighbours, the low-pass Gu ratio, blur,
augmentations, training and save/load, each against a hand computation."""
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from memlib.copydetect import (LOWPASS_SIGMA, AugmentConfig, CopyDetector, Descriptor, DescriptorConfig,
                               DescriptorTrainConfig, augment, calibrate_threshold, cosine, false_copy_rate,
                               gaussian_blur, lowpass_gu_ratio, nearest, train_descriptor)


def test_the_threshold_is_the_k_plus_first_highest_negative():
    scores = np.arange(100) / 100          # 0.00 ... 0.99
    t = calibrate_threshold(scores)         # k = 5: the sixth highest, 0.94; five scores lie above it
    assert t == pytest.approx(0.94) and false_copy_rate(scores, t) == 0.05
    assert calibrate_threshold(scores, np.array([0.5, 0.6])) == pytest.approx(0.94)   # the larger of the two
    assert calibrate_threshold(np.array([0.1, 0.2]), scores) == pytest.approx(0.94)   # k = 0 there: its max, 0.2
    assert calibrate_threshold(np.array([0.1, 0.97]), scores) == pytest.approx(0.97)


@pytest.mark.parametrize("n", [7, 19, 20, 21, 128, 333])
def test_calibration_calls_at_most_five_percent_of_each_negative_set_copies_and_no_fewer_than_it_must(n):
    rng = np.random.default_rng(n)
    a, b = rng.normal(size=n), rng.normal(0.5, 1, size=n + 13)
    t = calibrate_threshold(a, b)
    assert false_copy_rate(a, t) <= 0.05 and false_copy_rate(b, t) <= 0.05
    # tight: the next score below t on the set that sets it would let more than 5 % through
    decisive = a if t in a else b
    lower = np.max(decisive[decisive < t])
    assert false_copy_rate(decisive, lower) > 0.05


def test_calibration_refuses_empty_negatives():
    with pytest.raises(ValueError, match="non-empty"):
        calibrate_threshold(np.array([]))


def test_cosine_and_nearest_against_a_hand_computation():
    refs = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    queries = torch.tensor([[2.0, 0.1], [-1.0, 5.0], [1.0, 1.2]])
    by_hand = np.array([[q @ r / np.linalg.norm(q) / np.linalg.norm(r) for r in refs.numpy()] for q in queries.numpy()])
    assert np.allclose(cosine(queries, refs).numpy(), by_hand, atol=1e-6)
    idx, sim = nearest(queries, refs, chunk=2)
    assert idx.tolist() == [0, 1, 2] and np.allclose(sim, by_hand.max(1), atol=1e-6)


def test_blur_matches_scipy_per_image_sigma():
    x = torch.randn(3, 2, 9, 7)
    sig = [0.0, 0.6, 1.3]
    out = gaussian_blur(x, torch.tensor(sig))
    for i, s in enumerate(sig):   # the batch shares the widest kernel radius, ceil(3 * 1.3) = 4 pixels
        want = gaussian_filter(x[i].numpy(), (0, s, s), mode="nearest", truncate=4 / s) if s else x[i].numpy()
        assert np.allclose(out[i].numpy(), want, atol=1e-5), s


def test_lowpass_gu_ratio_against_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    refs = torch.rand(6, 3, 8, 8, generator=g) * 2 - 1
    clusters = np.array([0, 0, 1, 2, 3, 4])
    queries = refs[[0, 3]] + 0.3 * torch.randn(2, 3, 8, 8, generator=g)
    lp = lambda x: np.stack([gaussian_filter(im, (0, LOWPASS_SIGMA, LOWPASS_SIGMA), mode="nearest", truncate=3.0)
                             for im in x.numpy()]).reshape(len(x), -1)
    r, q = lp(refs), lp(queries)
    d = np.linalg.norm(q[:, None] - r[None], axis=2)
    nn = d.argmin(1)
    d2 = np.array([d[i][clusters != clusters[nn[i]]].min() for i in range(len(q))])
    res = lowpass_gu_ratio(queries, refs, clusters)
    assert res.nn_index.tolist() == nn.tolist()
    assert np.allclose(res.ratio, d.min(1) / d2, rtol=1e-4)


def test_augment_is_seeded_keeps_shape_and_range_and_changes_the_image():
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    a = augment(x, AugmentConfig(), torch.Generator().manual_seed(1))
    b = augment(x, AugmentConfig(), torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= -1 and a.max() <= 1
    assert not torch.equal(a, augment(x, AugmentConfig(), torch.Generator().manual_seed(2)))
    grey = augment(x[:, :1, :8, :8], AugmentConfig(), torch.Generator().manual_seed(1))   # digits' shape
    assert grey.shape == (8, 1, 8, 8)


def test_the_descriptor_is_unit_length_and_names_a_wrong_shape():
    d = Descriptor(DescriptorConfig(channels=1, image_size=8, dim=12))
    z = d(torch.randn(5, 1, 8, 8))
    assert z.shape == (5, 12) and torch.allclose(z.norm(dim=1), torch.ones(5), atol=1e-5)
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        d(torch.randn(2, 3, 8, 8))


def test_training_is_deterministic_and_ships_float16_weights(tmp_path):
    imgs = torch.rand(12, 3, 8, 8) * 2 - 1
    args = (DescriptorConfig(image_size=8, width=4, dim=8), DescriptorTrainConfig(steps=3, batch_size=6),
            AugmentConfig(), {"what": "test"})
    a, state = train_descriptor(imgs, tmp_path / "a", *args, progress=False)
    b, _ = train_descriptor(imgs, tmp_path / "b", *args, progress=False)
    assert state["step"] == 3
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb) and torch.equal(pa, pa.half().float())


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    det = CopyDetector(Descriptor(DescriptorConfig(width=4, dim=8)), 0.8125, {"dataset": "toy", "n": 3})
    folder = det.save(tmp_path / "det")
    back = CopyDetector.load(folder)
    assert (back.threshold, back.trained_on, back.name) == (0.8125, {"dataset": "toy", "n": 3}, "det")
    assert back.descriptor.cfg == det.descriptor.cfg and len(back.sha256) == 64
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    for p in det.descriptor.parameters():   # what the float16 file holds
        p.data = p.data.half().float()
    assert torch.allclose(back.embed(x), det.embed(x), atol=1e-6)
    assert (folder / "model.safetensors").stat().st_size < 1_000_000
    refs = torch.cat([x[:2], torch.rand(3, 3, 16, 16)])
    assert back.nearest(x[:2], refs)[0].tolist() == [0, 1] and back.is_copy(x[:2], refs).all()
    assert back.copy_rate(x[:2], back.embed(refs)) == 1.0   # references as descriptors give the same answer


def test_loading_something_else_names_the_problem(tmp_path):
    from memlib.checkpoint import CheckpointError, save_checkpoint

    save_checkpoint(tmp_path / "other", Descriptor(DescriptorConfig(width=4)), {"kind": "digits-ddpm"})
    with pytest.raises(CheckpointError, match="no finished copy detector"):
        CopyDetector.load(tmp_path / "other")
