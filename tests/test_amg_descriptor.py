"""AMG's sigma from the copy descriptor (Chen, Liu, Xu, CVPR 2024, Eq. 9 with SSCD; ``memlib.amg.descriptor_sigma``):
the index's similarity is the detector's cosine, its gradient is the descriptor's, the setting is chosen on the
method (the registry's ``amg`` stays on pixels), and the low-pass Gu ratio per prompt that judges such a run."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from memlib.amg import descriptor_sigma
from memlib.amg.descriptor_sigma import DescriptorIndex, descriptor_index, lowpass_per_prompt
from memlib.amg.guidance import nearest, similarity_and_grad
from memlib.amg import methods
from memlib.amg.methods import AMGSetup, amg_method, main_settings
from memlib.amg.threshold import Threshold
from memlib.copydetect import CopyDetector, Descriptor, DescriptorConfig, lowpass_gu_ratio
from memlib.mitigate.similarity import SimilarityIndex


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return CopyDetector(Descriptor(DescriptorConfig(channels=3, image_size=8, width=4, dim=16)), 0.5, name="tiny")


@pytest.fixture(scope="module")
def train():
    return torch.rand(30, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_the_index_similarity_is_the_detectors_cosine(detector, train):
    index, net = descriptor_index(detector, train)
    q = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    sigma, nn = nearest(index, net(q), "ncc")
    want_nn, want_sigma = detector.nearest(q, train)
    assert np.array_equal(nn.numpy(), want_nn) and np.allclose(sigma.numpy(), want_sigma, atol=1e-6)
    # a training image is its own nearest neighbour at cosine 1
    sigma, nn = nearest(index, net(train[:3]), "ncc")
    assert nn.tolist() == [0, 1, 2] and torch.allclose(sigma, torch.ones(3), atol=1e-5)


def test_the_gradient_of_the_descriptor_sigma_matches_finite_differences(detector, train):
    index, net = descriptor_index(detector, train)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64).float() * 2 - 1
    sigma, grad = similarity_and_grad(index, x, "ncc", to_pixels=net)
    rows = index.topk_ncc(net(x).detach(), 1)[1][:, 0]
    direction = torch.randn_like(x)
    h = 1e-3
    with torch.no_grad():
        up = index.ncc_to(net(x + h * direction), rows)
        down = index.ncc_to(net(x - h * direction), rows)
    numeric = (up - down) / (2 * h)
    analytic = (grad * direction).flatten(1).sum(1)
    assert torch.allclose(numeric, analytic, rtol=2e-2, atol=1e-4)
    # a step against the gradient lowers sigma: what G_sim does to x0_hat
    with torch.no_grad():
        after = index.ncc_to(net(x - 0.05 * grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)), rows)
    assert (after < sigma).all()


def _backend(train):
    data = SimpleNamespace(images=train, captions=[f"caption {i}" for i in range(len(train))])
    return SimpleNamespace(testbed=SimpleNamespace(data=data), device=torch.device("cpu"))


def test_the_similarity_is_a_setting_of_the_method_and_pixels_by_default(detector, train, monkeypatch):
    backend, th = _backend(train), Threshold()
    pixel = methods.testbed_setup(backend, threshold=th)
    assert pixel.similarity == "pixel" and type(pixel.index) is SimilarityIndex and pixel.to_pixels is None
    monkeypatch.setattr(descriptor_sigma, "testbed_descriptor", lambda ref, progress=False, device=None: detector)
    desc = methods.testbed_setup(backend, threshold=th, similarity="descriptor", ref=object())
    assert desc.similarity == "descriptor" and isinstance(desc.index, DescriptorIndex) and desc.to_pixels is not None
    assert len(desc.index) == len(train) and desc.captions == backend.testbed.data.captions   # row i = row i
    # the similarity is part of the method's identity (its cache key) and its description
    m_pixel, m_desc = amg_method(pixel, 300.0), amg_method(desc, 300.0)
    assert m_pixel.key()["params"]["similarity"] == "pixel" and m_desc.key()["params"]["similarity"] == "descriptor"
    assert "descriptor sigma" in m_desc.description


def test_bad_similarity_settings_give_clear_errors(detector, train):
    backend, th = _backend(train), Threshold()
    with pytest.raises(ValueError, match="AMG similarity 'sscd': choose one of"):
        methods.testbed_setup(backend, threshold=th, similarity="sscd")
    with pytest.raises(ValueError, match="pass ref=TestbedRef"):
        methods.testbed_setup(backend, threshold=th, similarity="descriptor")
    with pytest.raises(ValueError, match="is a cosine"):
        methods.testbed_setup(backend, main_settings(similarity="nl2"), th, similarity="descriptor", ref=object())
    with pytest.raises(ValueError, match="AMG similarity 'x'"):
        AMGSetup(SimilarityIndex(train), th, similarity="x")


def test_the_low_pass_gu_ratio_per_prompt_averages_to_the_rows_column():
    g = torch.Generator().manual_seed(4)
    images = torch.rand(12, 3, 8, 8, generator=g) * 2 - 1
    cluster = np.repeat(np.arange(6), 2)
    data = SimpleNamespace(images=images, cluster=cluster)
    prompts = [SimpleNamespace(cluster=c) for c in (0, 3, 5)]
    gens = torch.stack([torch.stack([images[0], images[1]]),                      # two copies of cluster 0
                        torch.stack([images[6], torch.rand(3, 8, 8, generator=g) * 2 - 1]),   # one copy of 3
                        torch.stack([images[0], images[0]])])                     # copies of 0, planted 5
    out = lowpass_per_prompt(data, prompts, (gens + 1) / 2)
    assert out.tolist() == [1.0, 0.5, 0.0]
    flat = gens.flatten(0, 1)
    pooled = lowpass_gu_ratio(flat, images, cluster).replicated(np.repeat([0, 3, 5], 2)).mean()
    assert out.mean() == pytest.approx(pooled)
