"""AMG's object-level similarity from the testbed's copy descriptor (Chen, Liu, Xu, CVPR 2024, Eq. 9:
sigma_t = E(x0_hat)^T E(n0) with E = SSCD; here E is the descriptor of ``memlib.copydetect``, the testbed's SSCD
analogue), and the per-prompt low-pass Gu ratio that judges a run steered by it.

- ``DescriptorIndex``: the training images' descriptors; its 'ncc' is their cosine, the detector's similarity.
  ``AMGGuidance`` runs on it unchanged with ``to_pixels`` = the descriptor network, so sigma_t, the nearest
  training image n0 (in descriptor space) and the gradient of sigma_t (through the descriptor, the UNet held
  fixed, as the released SD code differentiates through SSCD) are the detector's own.
- ``testbed_descriptor``: the testbed's shipped copy detector (``load_testbed_detector``);
  ``descriptor_calibration``: lambda_t fitted to descriptor sigma_t of held-out dev trajectories, as the pixel
  sigma's is (``calibrate``). ``memlib.amg.methods.testbed_setup(..., similarity='descriptor')`` builds the setup.
- ``lowpass_per_prompt``: the Gu ratio after the detector module's low-pass filter, per prompt, for paired
  comparisons (a steered run's own copy rate is gamed, so it is judged by the pixel and low-pass Gu ratios).

Steering a method with the copy detector makes that detector's verdict on the method worthless: this is the one
module of the paper packages allowed to reach ``memlib.copydetect`` (tests/test_architecture.py), and a run with
this sigma is never judged by its copy-rate column.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..cache import cached_arrays, weights_fingerprint
from ..device import compute_tag
from ..copydetect import CopyDetector, lowpass_gu_ratio
from ..generation import GenerationConfig
from ..mitigate.evalset import EvalPrompt, evaluation_prompts
from ..mitigate.similarity import SimilarityIndex
from ..testbed.copy_detector import load_testbed_detector
from .calibrate import Calibration, calibrate, sigma_traces


class DescriptorIndex(SimilarityIndex):
    """Training descriptors (N, D), queried by cosine similarity (what the copy detector thresholds)."""

    def __init__(self, descriptors: torch.Tensor):
        super().__init__(descriptors)
        self.xc = F.normalize(self.x, dim=1)

    def ncc(self, q: torch.Tensor) -> torch.Tensor:
        return F.normalize(self._check(q), dim=1) @ self.xc.to(q.device).T

    def ncc_to(self, q: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(rows, device=q.device)
        return (F.normalize(self._check(q), dim=1) * self.xc.to(q.device)[idx]).sum(1)


def descriptor_index(detector: CopyDetector, images: torch.Tensor) -> tuple[DescriptorIndex, torch.nn.Module]:
    """(index over the descriptors of ``images``, the differentiable map image -> descriptor)."""
    net = detector.descriptor.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return DescriptorIndex(detector.embed(images)), net


def testbed_descriptor(ref, progress: bool = False, device=None) -> CopyDetector:
    """The copy detector of testbed ``ref`` (a ``TestbedRef``): loaded, else trained and calibrated once; on
    ``device`` (the guidance differentiates through it where the sampler runs)."""
    return load_testbed_detector(ref, progress=progress, device=device)


def descriptor_calibration(backend, detector: CopyDetector, gen_cfg: GenerationConfig, percentile: float,
                           max_per_group: int = 0, progress: bool = False) -> Calibration:
    """lambda_t for the descriptor sigma: fitted to the ``percentile`` of descriptor sigma_t per step over
    plain-CFG trajectories of the testbed's held-out dev prompts (cached on the weights and the detector)."""
    data = backend.testbed.data
    texts = [p.text for p in evaluation_prompts(data, "dev", groups=("heldout",), max_per_group=max_per_group)]
    key = {"what": "amg-sigma-heldout-dev-descriptor", "weights": weights_fingerprint(backend),
           "compute": compute_tag(backend),
           "detector": detector.sha256, "gen": gen_cfg.to_dict(), "prompts": texts}

    def compute():
        index, net = descriptor_index(detector, data.images)
        sig, t, _ = sigma_traces(backend, texts, gen_cfg, index, to_pixels=net, progress=progress)
        return {"sigma": sig, "timesteps": t}

    arr = cached_arrays("amg", key, compute)
    return calibrate(arr["sigma"], arr["timesteps"], percentile)


def lowpass_per_prompt(data, prompts: list[EvalPrompt], images: torch.Tensor) -> np.ndarray:
    """Per prompt, the share of its generations ``images`` (P, G, C, H, W in [0, 1]) that the low-pass Gu ratio
    calls copies of the planted cluster (``memlib.copydetect.lowpass_gu_ratio``; a held-out prompt, with no
    planted cluster, counts a copy of any training image), as ``MethodRow.lowpass_replication`` averages them."""
    P, G = images.shape[:2]
    flat = images.flatten(0, 1).float() * 2 - 1
    planted = np.repeat([p.cluster for p in prompts], G)
    res = lowpass_gu_ratio(flat, data.images, data.cluster)
    return res.replicated(planted).reshape(P, G).mean(1)
