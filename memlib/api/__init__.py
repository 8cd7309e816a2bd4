"""memlib on your own model: detection, explanation and every mitigation as plain functions (and the ``memlib``
command line, ``memlib.api.cli``, which wraps them).

    import memlib
    res = memlib.detect("prompts.txt", model="path/to/sd-folder", calibrate="nemo:non_memorized", out="scores.csv")
    exp = memlib.explain("a prompt", model="testbed", out="explain/")
    imgs = memlib.generate("prompts.txt", model="testbed", method="wen_pe", knob=2.0, out="images/")

``model``: ``testbed`` (shipped with the repository, nothing downloaded, never trained here), ``tiny-sd`` (random
weights, smoke tests), a ``save_pretrained`` folder or a hub id (offline-first). Without ``out``, ``detect`` and
``explain`` write nothing and ``generate`` writes under ``memlib.paths.outputs_dir`` (docs/install.md).
"""
from .detection import DetectResult, calibrated_threshold, detect
from .checkup import doctor
from .explanation import Explanation, explain
from .image_generation import ImagesResult, generate

__all__ = ["detect", "explain", "generate", "doctor", "calibrated_threshold", "DetectResult", "Explanation",
           "ImagesResult"]
