import numpy as np
import pytest
import torch

from memlib.config import ConfigError
from memlib.testbed.build import PRESETS
from memlib.testbed.data import TestbedDataConfig, make_testbed_data, render_captions
from memlib.tokenizer import ClipBPETokenizer


@pytest.fixture
def data(tiny_data):
    return tiny_data


def test_same_seed_same_data_other_seed_other_data(data):
    again = make_testbed_data(TestbedDataConfig(**PRESETS["tiny"]))
    assert torch.equal(again.images, data.images) and again.captions == data.captions
    assert [p.text for p in again.prompts] == [p.text for p in data.prompts]
    other = make_testbed_data(TestbedDataConfig(seed=1, **PRESETS["tiny"]))
    assert not torch.equal(other.images, data.images[: len(other.images)]) or other.captions != data.captions


def test_images_in_range_and_shape(data):
    assert data.images.shape[1:] == (3, 16, 16)
    assert data.images.min() >= -1 and data.images.max() <= 1


def test_verbatim_group_is_one_image_whose_copies_share_only_their_trigger(data):
    from memlib.testbed.data import canonical_caption, combo_of

    cfg = data.config
    assert len(cfg.verbatim_caption_cycle) == 3 <= cfg.verbatim_copies  # the tiny preset sees every kind
    for p in data.prompts_in("verbatim"):
        rows = np.flatnonzero(data.cluster == p.cluster)
        assert len(rows) == cfg.verbatim_copies == p.copies
        caps = [data.captions[r] for r in rows]
        assert p.text == caps[0]  # the evaluated prompt names the image's own combination
        assert all(torch.equal(data.images[r], data.images[rows[0]]) for r in rows)
        assert p.trigger and all(c.endswith(p.trigger) for c in caps)
        assert sum(p.trigger in c for c in data.captions) == cfg.verbatim_copies  # trigger is unique
        own = combo_of(caps[0][: -len(p.trigger)].rstrip())
        # copy 2 names another training combination, copy 3 is the trigger alone
        other = caps[1][: -len(p.trigger)].rstrip()
        assert combo_of(other) != own and canonical_caption(other) in data.combos_train  # never a held-out one
        assert caps[2] == p.trigger


def test_verbatim_caption_cycle_is_checked():
    with pytest.raises(ConfigError, match="verbatim_caption_cycle"):
        TestbedDataConfig(verbatim_caption_cycle=("trigger_only",))
    with pytest.raises(ConfigError, match="verbatim_caption_cycle"):
        TestbedDataConfig(verbatim_caption_cycle=("named", "bogus"))
    v4 = make_testbed_data(TestbedDataConfig(**(PRESETS["tiny"] | dict(verbatim_caption_cycle=("named",)))))
    for p in v4.prompts_in("verbatim"):  # generator v4: every copy names the image's own combination
        caps = [v4.captions[r] for r in np.flatnonzero(v4.cluster == p.cluster)]
        assert len({combo_of_caption(c, p.trigger) for c in caps}) == 1


def combo_of_caption(caption: str, trigger: str):
    from memlib.testbed.data import combo_of

    return combo_of(caption[: -len(trigger)].rstrip())


def test_knob_levels_have_the_planned_copies(data):
    knob = data.prompts_in("verbatim_knob")
    assert sorted({p.copies for p in knob}) == sorted(data.config.knob_copies)
    for p in knob:
        assert (data.cluster == p.cluster).sum() == p.copies


def test_image_duplication_is_one_image_under_distinct_captions(data):
    for p in data.prompts_in("image_dup"):
        rows = np.flatnonzero(data.cluster == p.cluster)
        assert len(rows) == data.config.image_dup_captions
        assert len({data.captions[r] for r in rows}) == len(rows)
        assert all(torch.equal(data.images[r], data.images[rows[0]]) for r in rows)
        assert p.text in {data.captions[r] for r in rows}


def test_caption_duplication_is_one_caption_over_near_duplicates(data):
    for p in data.prompts_in("caption_dup"):
        rows = np.flatnonzero(data.cluster == p.cluster)
        assert len(rows) == data.config.caption_dup_images
        assert {data.captions[r] for r in rows} == {p.text}
        imgs = data.images[rows]
        assert len({tuple(i.flatten().tolist()) for i in imgs}) > 1  # not exact copies
        spread = (imgs - imgs[0]).flatten(1).norm(dim=1).max()
        typical = (data.images[:50] - data.images[50:100]).flatten(1).norm(dim=1).median()
        assert spread < typical  # ... but much closer to each other than unrelated images


def test_negatives_never_appear_in_training(data):
    train = set(data.captions)
    held = data.prompts_in("heldout")
    assert held and all(p.text not in train for p in held)
    assert not set(data.combos_heldout) & set(data.combos_train)
    tok = ClipBPETokenizer()
    used = {t for c in train for t in tok.token_ids(c)}
    for p in data.prompts_in("random"):
        assert not set(tok.token_ids(p.text)) & used


def test_render_captions_rejects_unknown_caption():
    with pytest.raises(ValueError, match="not an ordinary testbed caption"):
        render_captions(["a purple hexagon"], 1, seed=0)


@pytest.mark.parametrize("kwargs, name", [(dict(image_size=10), "image_size"),
                                          (dict(heldout_fraction=2.0), "heldout_fraction"),
                                          (dict(n_verbatim=-1), "n_verbatim"),
                                          (dict(seed="zero"), "seed")])
def test_bad_data_config_names_the_parameter(kwargs, name):
    with pytest.raises((ConfigError, ValueError), match=name):
        TestbedDataConfig(**kwargs)


def test_ideal_first_step_score_is_the_scaled_distance_of_the_conditional_mean(data):
    from memlib.wen.ideal import ideal_first_step_scores

    p = data.prompts_in("verbatim")[0]
    planted = data.images[np.flatnonzero(np.asarray(data.captions) == p.text)[0]].double()
    expected = np.sqrt(0.01 / 0.99) * float((planted - data.images.double().mean(0)).norm())
    assert ideal_first_step_scores(data, [p], alpha_bar=0.01)[0] == pytest.approx(expected)
    with pytest.raises(ValueError, match="no ideal conditional mean"):
        ideal_first_step_scores(data, data.prompts_in("random")[:1], alpha_bar=0.01)


def test_default_design_lets_an_ideal_denoiser_separate_memorized_from_heldout_at_the_first_step():
    """The data-design property notebook 01 depends on: ordinary captions leave most of the image free."""
    from memlib.metrics import roc
    from memlib.wen.ideal import ideal_first_step_scores

    full = make_testbed_data()
    pos = ideal_first_step_scores(full, full.prompts_in("verbatim"), alpha_bar=0.0047)
    neg = ideal_first_step_scores(full, full.prompts_in("heldout"), alpha_bar=0.0047, n_renderings=50)
    r = roc(pos, neg)
    assert r.auc > 0.99 and pos.min() > neg.max()


def test_every_phrasing_maps_back_to_its_combination():
    from memlib.testbed.data import TEMPLATES, all_combos, canonical_caption, combo_of, ordinary_caption

    for combo in all_combos()[::7]:
        for k in range(len(TEMPLATES)):
            assert combo_of(ordinary_caption(*combo, template=k)) == combo
            assert canonical_caption(ordinary_caption(*combo, template=k)) == ordinary_caption(*combo)
    with pytest.raises(ValueError, match="expected a phrasing such as"):
        combo_of("a large red circle at the top left")  # version-2 phrasing, no longer generated


def test_no_prompt_row_is_the_same_in_every_caption():
    """Version 3's reason: a first word shared by every caption gives a causal encoder one constant row
    that marks 'conditional' and outranks the trigger in Wen's token gradients (notebook 02, testbed v2)."""
    from collections import Counter

    full = make_testbed_data()
    tok = ClipBPETokenizer()
    first = Counter(tok.token_strings(c)[0] for c in full.captions)
    assert first.most_common(1)[0][1] < 0.2 * len(full.captions)
    assert max(tok.n_tokens(c) for c in full.captions) + 2 <= 20  # fits the testbed's context length
