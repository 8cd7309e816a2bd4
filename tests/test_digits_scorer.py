"""The digits scorer's independent columns: the shipped copy detector and the low-pass Gu ratio."""
import numpy as np
import pytest
import torch

from memlib.copydetect import CopyDetector
from memlib.mitigate.digits import DigitsScorer
from memlib.paths import repo_root
from memlib.testbed.copy_detector import digits_detector_folder
from memlib.testbed.digits import DigitsDataConfig, make_digits_data


@pytest.fixture(scope="module")
def data():
    return make_digits_data(DigitsDataConfig())


def test_the_copy_detector_calls_training_digits_copies_and_few_unseen_digits(data):
    # the shipped detector (tests keep their checkpoints elsewhere, where it would be trained again)
    scorer = DigitsScorer(data, detector=CopyDetector.load(repo_root() / "checkpoints" / digits_detector_folder().name))
    train, unseen = scorer.score(data.images[:100]), scorer.score(data.heldout_images[:200])
    assert train["copy_rate"] == 1.0 and train["lowpass_replication"] == 1.0
    assert unseen["copy_rate"] <= 0.1 and unseen["copy_rate_ci"][0] <= unseen["copy_rate"] <= unseen["copy_rate_ci"][1]
    # speckle that a pixel-guided method could add hides a copy from the pixel ratio, not from the detector
    speckled = (data.images[:100] + 0.2 * torch.sign(torch.randn(data.images[:100].shape,
                                                                  generator=torch.Generator().manual_seed(0))))
    s = scorer.score(speckled)
    assert s["copy_rate"] > s["gu_replication"] + 0.2, s


def test_without_a_detector_the_copy_column_is_not_measured(data):
    s = DigitsScorer(data).score(data.images[:20])
    assert np.isnan(s["copy_rate"]) and s["gu_replication"] == 1.0
