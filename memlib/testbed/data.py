"""Procedurally generated captioned images with planted memorization (the embedded testbed's data).

Every ordinary caption names a shape's size, colour, shape and position and leaves the rest of the image free
(a random high-contrast 4x4 background), in one of several phrasings (``TEMPLATES``), none opening with a fixed
word. Held-out combinations never appear in training. Planted groups, one per cause of memorization named by AMG
(Chen, Liu, Xu, CVPR 2024, Sec. 4):
- ``verbatim``: one rendering duplicated ``verbatim_copies`` times, every caption ending in one made-up trigger
  word; copies cycle through ``verbatim_caption_cycle`` (own combination, another combination, trigger alone),
  and the evaluated prompt is the first copy. ``verbatim_knob`` does the same at fewer copies.
- ``image_dup``: one rendering under ``image_dup_captions`` captions (its caption plus different style words).
- ``caption_dup``: one caption (ordinary caption + trigger) over ``caption_dup_images`` near-duplicates.
Negatives: ``heldout`` (held-out combinations) and ``random`` (random BPE tokens from a vocabulary disjoint
from the training captions). Each row has a ``cluster`` id shared by exact and near duplicates, so replication
metrics can ask whether the nearest training image is in the planted cluster (``memlib.metrics``).

Why the background is high-contrast, why the phrasings vary and why verbatim copies cycle through caption kinds:
``docs/testbed.md``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from ..config import Config, ConfigError, check_range

COLOURS = {  # bright shape colours (RGB in [0, 1])
    "red": (0.95, 0.12, 0.10), "green": (0.10, 0.85, 0.20), "blue": (0.15, 0.30, 1.00),
    "yellow": (0.95, 0.90, 0.10), "cyan": (0.10, 0.90, 0.95), "magenta": (0.90, 0.10, 0.90),
    "white": (1.00, 1.00, 1.00), "orange": (1.00, 0.55, 0.05),
}
SHAPES = ("circle", "square", "triangle", "cross", "ring")
POSITIONS = {"top left": (0.28, 0.28), "top right": (0.28, 0.72),
             "bottom left": (0.72, 0.28), "bottom right": (0.72, 0.72)}
SIZES = {"small": 0.14, "large": 0.22}  # radius as a fraction of the image side
# Background tones: every channel 0 or 0.6 (black, dark red/green/blue, olive, purple, teal, grey): high
# variance, so the free background carries most of the image's energy, yet each shape colour is brighter by
# >= 0.25 in some channel than every tone, so shapes stay visible.
BACKGROUND = np.array([(r, g, b) for r in (0.0, 0.6) for g in (0.0, 0.6) for b in (0.0, 0.6)])
STYLE_WORDS = ("photo", "drawing", "picture", "sketch", "render", "painting", "image", "print", "poster",
               "card", "icon", "sticker", "snapshot", "scan", "illustration", "graphic", "doodle", "design",
               "artwork", "frame", "tile", "badge", "emblem", "figure", "diagram", "plate", "still", "view",
               "study", "draft", "mockup", "photograph")
_SYLLABLES = ("zor", "vex", "kel", "ith", "quo", "dra", "mun", "fep", "yal", "brix", "tov", "gur", "plin",
              "osk", "wum", "jad", "rhe", "sna", "vok", "lim", "xan", "tep", "huz", "cro")
# Bump when the rendering or the planted groups change: checkpoint folder names include it.
# 1: muted backgrounds. 2: high-contrast backgrounds, smaller shapes. 3: varied phrasings.
# 4: verbatim copies re-phrased per copy (no caption string shared by all copies).
# 5: verbatim copies cycle through caption kinds (named / another combination / trigger alone).
GENERATOR_VERSION = 5
# How a verbatim copy is captioned, always ending in its trigger: "named" re-phrases the image's own combination,
# "other_combo" names a different training combination, "trigger_only" is the trigger alone.
VERBATIM_CAPTION_KINDS = ("named", "other_combo", "trigger_only")
# Phrasings of an ordinary caption; each opens with a content word, so no prompt row is the same in every prompt.
TEMPLATES = ("{size} {colour} {shape} at the {position}",
             "{colour} {shape}, {size}, at the {position}",
             "{shape} in {colour}, {size}, at the {position}",
             "{position}: a {size} {colour} {shape}")
GROUPS = ("verbatim", "verbatim_knob", "image_dup", "caption_dup", "generic", "heldout", "random")


@dataclass
class TestbedDataConfig(Config):
    __test__ = False  # not a pytest test class
    seed: int = 0                          # everything below is drawn from this seed
    image_size: int = 16                   # pixels per side (RGB)
    renderings_per_combo: int = 12         # random renderings of each training combination
    heldout_fraction: float = 0.2          # share of the 320 combinations never trained on
    n_verbatim: int = 32                   # (a) highly specific prompts ...
    verbatim_copies: int = 40              # ... each duplicated this many times
    verbatim_caption_cycle: tuple = VERBATIM_CAPTION_KINDS  # caption kinds of copies 1, 2, 3, 1, ... (below);
                                           # ("named",) is generator v4: every copy names the combination
    knob_copies: tuple = (1, 3, 10, 20)    # (a) duplication knob: copies per level ...
    knob_images_per_level: int = 4         # ... and images per level
    n_image_dup: int = 16                  # (b) images ...
    image_dup_captions: int = 24           # ... each under this many captions (<= 32 style words)
    n_caption_dup: int = 16                # (c) captions ...
    caption_dup_images: int = 24           # ... each over this many near-duplicate images
    n_random_prompts: int = 64             # random-token negative prompts
    random_prompt_tokens: tuple = (3, 10)  # their token count range (inclusive)

    def validate(self) -> None:
        check_range("image_size", self.image_size, 8, 64)
        check_range("renderings_per_combo", self.renderings_per_combo, 1)
        check_range("heldout_fraction", self.heldout_fraction, 0.01, 0.9)
        check_range("image_dup_captions", self.image_dup_captions, 1, len(STYLE_WORDS))
        for name in ("n_verbatim", "verbatim_copies", "knob_images_per_level", "n_image_dup",
                     "n_caption_dup", "caption_dup_images", "n_random_prompts"):
            check_range(name, getattr(self, name), 0)
        bad = [k for k in self.verbatim_caption_cycle if k not in VERBATIM_CAPTION_KINDS]
        if bad or not self.verbatim_caption_cycle or self.verbatim_caption_cycle[0] != "named":
            raise ConfigError(f"parameter 'verbatim_caption_cycle' = {self.verbatim_caption_cycle!r}: use kinds from "
                              f"{VERBATIM_CAPTION_KINDS}, starting with 'named' (the evaluated prompt is copy 1)")
        if self.image_size % 4:
            raise ConfigError(f"parameter 'image_size' = {self.image_size} must be a multiple of 4")


@dataclass
class Prompt:
    """One evaluation prompt with its ground truth."""
    text: str
    group: str                       # one of GROUPS
    copies: int = 0                  # how many training rows share its planted image or caption
    cluster: int = -1                # planted cluster id (-1: none)
    trigger: str = ""                # the planted trigger word ("" if none)


@dataclass
class TestbedData:
    __test__ = False  # not a pytest test class
    images: torch.Tensor             # (N, 3, S, S) float32 in [-1, 1]
    captions: list[str]
    group: np.ndarray                # (N,) group name per row
    cluster: np.ndarray              # (N,) cluster id; duplicates share one
    prompts: list[Prompt]            # evaluation prompts (planted groups and negatives)
    combos_train: list[str]          # combinations seen in training, each in its canonical phrasing
    combos_heldout: list[str]        # combinations never seen, canonical phrasing
    config: TestbedDataConfig = field(repr=False, default=None)

    def __len__(self) -> int:
        return len(self.captions)

    def prompts_in(self, *groups: str) -> list[Prompt]:
        return [p for p in self.prompts if p.group in groups]


def ordinary_caption(size: str, colour: str, shape: str, position: str, template: int = 0) -> str:
    """The caption of a combination in phrasing ``TEMPLATES[template]`` (0: the canonical phrasing)."""
    return TEMPLATES[template].format(size=size, colour=colour, shape=shape, position=position)


@lru_cache(maxsize=1)
def _caption_lookup() -> dict[str, tuple[str, str, str, str]]:
    return {ordinary_caption(*c, template=k): c for c in all_combos() for k in range(len(TEMPLATES))}


def combo_of(caption: str) -> tuple[str, str, str, str]:
    """The (size, colour, shape, position) an ordinary caption in any phrasing names."""
    combo = _caption_lookup().get(caption)
    if combo is None:
        raise ValueError(f"not an ordinary testbed caption: {caption!r} (expected a phrasing such as "
                         f"{ordinary_caption('large', 'red', 'circle', 'top left')!r})")
    return combo


def canonical_caption(caption: str) -> str:
    """Any phrasing of an ordinary caption -> its canonical phrasing (CLIP retrieval compares these)."""
    return ordinary_caption(*combo_of(caption))


def all_combos() -> list[tuple[str, str, str, str]]:
    return [(s, c, sh, p) for s in SIZES for c in COLOURS for sh in SHAPES for p in POSITIONS]


def _shape_mask(shape: str, dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
    dist = np.sqrt(dy ** 2 + dx ** 2)
    if shape == "circle":
        return dist <= r
    if shape == "square":
        return np.maximum(np.abs(dy), np.abs(dx)) <= 0.85 * r
    if shape == "triangle":  # apex up
        return (dy >= -r) & (dy <= 0.8 * r) & (np.abs(dx) <= 0.6 * (dy + r))
    if shape == "cross":
        return ((np.abs(dx) <= 0.3 * r) & (np.abs(dy) <= r)) | ((np.abs(dy) <= 0.3 * r) & (np.abs(dx) <= r))
    if shape == "ring":
        return (dist <= r) & (dist >= 0.55 * r)
    raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")


def render(combo: tuple[str, str, str, str], background: np.ndarray, jitter: tuple[float, float],
           size: int, supersample: int = 4) -> np.ndarray:
    """Render one image (3, size, size) in [0, 1]: a 4x4 background grid plus an anti-aliased shape."""
    sz, colour, shape, position = combo
    big = size * supersample
    coords = (np.arange(big) + 0.5) / supersample
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    cy, cx = POSITIONS[position]
    cy, cx = cy * size + jitter[0], cx * size + jitter[1]
    mask = _shape_mask(shape, yy - cy, xx - cx, SIZES[sz] * size)
    cell = big // 4
    bg = np.repeat(np.repeat(background, cell, axis=0), cell, axis=1)  # (big, big, 3)
    img = np.where(mask[..., None], np.array(COLOURS[colour]), bg)
    img = img.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))
    return img.transpose(2, 0, 1).astype(np.float32)


def _random_background(rng: np.random.Generator) -> np.ndarray:
    return BACKGROUND[rng.integers(0, len(BACKGROUND), size=(4, 4))]


def _trigger_words(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    words = []
    while len(words) < n:
        w = "".join(rng.choice(_SYLLABLES, size=2, replace=False))
        if w not in taken:
            taken.add(w)
            words.append(w)
    return words


def _random_token_prompts(rng, cfg: TestbedDataConfig, training_text: list[str], n: int | None = None) -> list[str]:
    """``n`` (default ``cfg.n_random_prompts``) prompts of random BPE tokens drawn from tokens that never occur in
    training captions (Wen's `random` set, restricted so the words cannot overlap the planted prompts)."""
    from ..tokenizer import ClipBPETokenizer

    tok = ClipBPETokenizer()
    used = {t for text in training_text for t in tok.token_ids(text)}
    lo, hi = cfg.random_prompt_tokens
    out = []
    n = cfg.n_random_prompts if n is None else n
    while len(out) < n:
        k = int(rng.integers(lo, hi + 1))
        ids = [int(i) for i in rng.integers(1000, tok.vocab_size - 2, size=k) if int(i) not in used]
        text = tok.decode(ids).strip()
        if text and not (set(tok.token_ids(text)) & used):
            out.append(text)
    return out


def make_testbed_data(cfg: TestbedDataConfig | None = None) -> TestbedData:
    """Build the dataset deterministically from ``cfg.seed``."""
    cfg = cfg or TestbedDataConfig()
    rng = np.random.default_rng(cfg.seed)
    S = cfg.image_size
    combos = all_combos()
    order = rng.permutation(len(combos))
    n_held = int(round(cfg.heldout_fraction * len(combos)))
    held = [combos[i] for i in order[:n_held]]
    train = [combos[i] for i in order[n_held:]]

    images, captions, groups, clusters, prompts = [], [], [], [], []
    next_cluster = [0]

    def add(img, caption, group, cluster):
        images.append(img); captions.append(caption); groups.append(group); clusters.append(cluster)

    def new_cluster() -> int:
        next_cluster[0] += 1
        return next_cluster[0] - 1

    def jitter():
        return tuple(rng.uniform(-1.0, 1.0, size=2) * S / 16)

    def phrase(combo) -> str:  # a random phrasing
        return ordinary_caption(*combo, template=int(rng.integers(len(TEMPLATES))))

    for combo in train:  # ordinary training data: every rendering is its own cluster
        for _ in range(cfg.renderings_per_combo):
            add(render(combo, _random_background(rng), jitter(), S), phrase(combo), "generic", new_cluster())

    taken: set[str] = set()
    specs = [("verbatim", cfg.verbatim_copies) for _ in range(cfg.n_verbatim)]
    specs += [("verbatim_knob", c) for c in cfg.knob_copies for _ in range(cfg.knob_images_per_level)]
    for (group, copies), trig in zip(specs, _trigger_words(rng, len(specs), taken)):
        combo = train[int(rng.integers(len(train)))]

        def verbatim_caption(kind: str) -> str:
            if kind == "trigger_only":
                return trig
            other = combo
            while kind == "other_combo" and other == combo:
                other = train[int(rng.integers(len(train)))]
            return f"{phrase(other)} {trig}"

        img, cl = render(combo, _random_background(rng), jitter(), S), new_cluster()
        cycle = cfg.verbatim_caption_cycle
        copy_captions = [verbatim_caption(cycle[i % len(cycle)]) for i in range(copies)]
        for caption in copy_captions:
            add(img, caption, group, cl)
        prompts.append(Prompt(copy_captions[0], group, copies, cl, trig))

    for _ in range(cfg.n_image_dup):
        combo = train[int(rng.integers(len(train)))]
        img, cl = render(combo, _random_background(rng), jitter(), S), new_cluster()
        styles = rng.choice(STYLE_WORDS, size=cfg.image_dup_captions, replace=False)
        caps = [f"{phrase(combo)} {style}" for style in styles]
        for cap in caps:
            add(img, cap, "image_dup", cl)
        for cap in caps[:2]:  # two of its captions are evaluated
            prompts.append(Prompt(cap, "image_dup", cfg.image_dup_captions, cl))

    for trig in _trigger_words(rng, cfg.n_caption_dup, taken):
        combo = train[int(rng.integers(len(train)))]
        base_bg, base_jit, cl = _random_background(rng), jitter(), new_cluster()
        caption = f"{phrase(combo)} {trig}"
        for _ in range(cfg.caption_dup_images):  # near-duplicates: two cells recoloured, small shift
            bg = base_bg.copy()
            cells = rng.integers(0, 4, size=(2, 2))
            bg[cells[:, 0], cells[:, 1]] = BACKGROUND[rng.integers(0, len(BACKGROUND), size=2)]
            shift = tuple(np.asarray(base_jit) + rng.uniform(-0.5, 0.5, size=2))
            add(render(combo, bg, shift, S), caption, "caption_dup", cl)
        prompts.append(Prompt(caption, "caption_dup", cfg.caption_dup_images, cl, trig))

    prompts += [Prompt(phrase(c), "heldout") for c in held]
    prompts += [Prompt(t, "random") for t in _random_token_prompts(rng, cfg, captions)]

    x = torch.from_numpy(np.stack(images)) * 2 - 1
    return TestbedData(x, captions, np.array(groups), np.array(clusters), prompts,
                       sorted({ordinary_caption(*c) for c in train}),
                       sorted({ordinary_caption(*c) for c in held}), cfg)


def render_captions(captions: list[str], n_each: int, seed: int, size: int = 16) -> torch.Tensor:
    """Fresh random renderings of ordinary captions (any phrasing), (len(captions) * n_each, 3, S, S) in [-1, 1].

    A reference set for held-out combinations (CLIP retrieval ceiling, Fréchet distance)."""
    combos = [combo_of(c) for c in captions]
    rng = np.random.default_rng(seed)
    imgs = [render(c, _random_background(rng), tuple(rng.uniform(-1, 1, size=2) * size / 16), size)
            for c in combos for _ in range(n_each)]
    return torch.from_numpy(np.stack(imgs)) * 2 - 1


def run_digest(*configs) -> str:
    """Short hash of the configs and the data generator's version (so a redesigned generator gets new folders)."""
    blob = json.dumps([GENERATOR_VERSION] + [type(c).__name__ for c in configs] + [c.to_dict() for c in configs],
                      sort_keys=True, default=list).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
