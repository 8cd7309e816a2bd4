"""AMG's guidance terms, switch, threshold fit, similarity index and gradients (Chen, Liu, Xu, CVPR 2024)."""
import numpy as np
import pytest
import torch

from memlib.amg.calibrate import calibrate
from memlib.amg.guidance import BRANCH, AMGGuidance, AMGSettings, nearest, similarity_and_grad
from memlib.amg.threshold import Threshold, constant_at_fire_share, fit_exponential
from memlib.mitigate.similarity import SimilarityIndex
from memlib.sampling import StepState, sample
from memlib.schedule import sd_scheduler

C, S = 3, 4   # channels, side


def denoise(x, t, c):
    """An analytic 'model': eps depends on x_t and, per row, on the conditioning vector c (B, 1, C)."""
    return 0.3 * x + 0.05 * torch.tanh(x.flip(-1)) + c[:, 0, :, None, None]


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, x, t, c):
        self.calls.append(len(x))
        return denoise(x, t, c)


def encode(texts):
    g = [torch.Generator().manual_seed(sum(map(ord, t))) for t in texts]
    return torch.stack([torch.randn(1, C, generator=gi) for gi in g])


@pytest.fixture(scope="module")
def train():
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(40, C, S, S, generator=g) * 2 - 1
    return imgs, [f"caption {i % 7}" for i in range(40)]


def state(x, cond, uncond, t=500, scale=3.0, a=0.3, den=denoise):
    ec, eu = den(x, t, cond), den(x, t, uncond)
    eps = eu + scale * (ec - eu)
    s = StepState(0, t, x, ec, eu, eps, None, a, scale, cond, uncond, den, 10)
    s.x0_hat = s.x0_from(eps)
    return s


def test_index_agrees_with_brute_force(train):
    imgs, _ = train
    idx = SimilarityIndex(imgs)
    q = torch.rand(5, C, S, S, generator=torch.Generator().manual_seed(1)) * 2 - 1
    a, b = q.flatten(1).double(), imgs.flatten(1).double()
    ac, bc = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    ncc = (ac / ac.norm(dim=1, keepdim=True)) @ (bc / bc.norm(dim=1, keepdim=True)).T
    sig, nn = nearest(idx, q, "ncc")
    assert torch.equal(nn, ncc.argmax(1)) and torch.allclose(sig.double(), ncc.max(1).values, atol=1e-5)
    d = torch.cdist(a, b)
    srt = d.sort(1).values
    nl2_brute = srt[:, 0] / (0.5 * srt[:, :10].mean(1))
    sig, nn = nearest(idx, q, "nl2", k=10, alpha=0.5)
    assert torch.equal(nn, d.argmin(1)) and torch.allclose(-sig.double(), nl2_brute, atol=1e-5)


@pytest.mark.parametrize("how", ["ncc", "nl2"])
def test_gradient_of_sigma_matches_finite_differences(train, how):
    imgs, _ = train
    idx = SimilarityIndex(imgs)
    x0 = (imgs[:3] + 0.3 * torch.randn(3, C, S, S, generator=torch.Generator().manual_seed(2))).double()
    sig, g = similarity_and_grad(idx, x0, how, k=10)
    v = torch.randn_like(x0)
    h = 1e-3
    f = lambda z: similarity_and_grad(idx, z, how, k=10)[0].double()
    fd = (f(x0 + h * v) - f(x0 - h * v)) / (2 * h)
    torch.testing.assert_close((g.double() * v).flatten(1).sum(1), fd, atol=2e-3, rtol=2e-2)


def test_each_term_moves_eps_in_its_stated_direction(train):
    imgs, caps = train
    idx = SimilarityIndex(imgs)
    x = imgs[:2] * 0.5 + 0.2 * torch.randn(2, C, S, S, generator=torch.Generator().manual_seed(3))
    cond, uncond = encode(["a", "b"]), torch.zeros(2, 1, C)
    always = Threshold("always", 0.0, 0.0, 0.0)
    base = state(x, cond, uncond)
    d = base.eps_cond - base.eps_uncond
    # despecification: eps - s1 (eps_c - eps_u), s1 = clip(c1 sigma, 0, s0 - 1)
    s = state(x, cond, uncond)
    new = AMGGuidance(AMGSettings(terms=("spe",), c1=1.0), idx, always)(s)
    sig = nearest(idx, base.x0_hat)[0].view(-1, 1, 1, 1)
    torch.testing.assert_close(new, base.eps - sig.clamp(0, 2) * d)
    assert ((new - base.eps) * d).flatten(1).sum(1).lt(0).all()
    # deduplication: eps - s2 (eps(x, y_N) - eps_u); y_N's eps comes from one extra call on the firing rows
    rec = Recorder()
    s = state(x, cond, uncond, den=rec)
    hook = AMGGuidance(AMGSettings(terms=("dup",), c2=1.0), idx, always, caps, encode)
    new = hook(s)
    e_n = denoise(x, 500, encode(hook.y_n))
    s2 = torch.minimum(sig, torch.tensor(2.0)).clamp_min(0)
    torch.testing.assert_close(new, base.eps - s2 * (e_n - base.eps_uncond))
    assert rec.calls == [2, 2, 2] and BRANCH in s.branches   # 2 CFG calls in state(), then the fresh y_N rows
    # dissimilarity: + c3 sqrt(1 - abar) grad_{x_t} sigma lowers sigma of the new x0_hat
    s = state(x, cond, uncond)
    new = AMGGuidance(AMGSettings(terms=("sim",), c3=0.05), idx, always)(s)
    before = nearest(idx, base.x0_hat)[0]
    after = idx.ncc_to(s.x0_from(new), nearest(idx, base.x0_hat)[1])
    assert (after < before).all() and not torch.equal(new, base.eps)


def test_never_crossing_the_threshold_is_bit_identical_to_cfg(train):
    imgs, caps = train
    idx = SimilarityIndex(imgs)
    x_T = torch.randn(3, C, S, S, generator=torch.Generator().manual_seed(4))
    cond, uncond = encode(["p", "q", "r"]), torch.zeros(1, 1, C)
    never = Threshold("constant", 5.0, 0.0, 0.0)
    stats_a, stats_b = {}, {}
    plain = sample(denoise, x_T, sd_scheduler("ddim"), 6, cond, uncond, 3.0, stats=stats_a)
    record = {"_rows": 3}
    hook = AMGGuidance(AMGSettings(), idx, never, caps, encode, record=record, rows=[0, 1, 2])
    guided = sample(denoise, x_T, sd_scheduler("ddim"), 6, cond, uncond, 3.0, hooks=[hook], stats=stats_b)
    assert torch.equal(plain, guided) and stats_a == stats_b
    assert record["fired"].sum() == 0 and record["sigma"].shape == (3, 6) and np.isfinite(record["sigma"]).all()
    # crossing it changes the samples and adds the y_N branch to the batched calls (fewer than 2x CFG's rows)
    always = Threshold("always", 0.0, 0.0, 0.0)
    hook = AMGGuidance(AMGSettings(c3=0.01), idx, always, caps, encode)
    stats_c = {}
    out = sample(denoise, x_T, sd_scheduler("ddim"), 6, cond, uncond, 3.0, hooks=[hook], stats=stats_c)
    assert not torch.equal(out, plain) and 12 < stats_c["model_evals_per_image"] <= 2 * 12


def test_code_mode_despecifies_below_the_threshold(train):
    imgs, caps = train
    idx = SimilarityIndex(imgs)
    x = imgs[:2] * 0.8
    never = Threshold("constant", 5.0, 0.0, 0.0)
    s = state(x, encode(["a", "b"]), torch.zeros(2, 1, C))
    assert AMGGuidance(AMGSettings(mode="paper"), idx, never, caps, encode)(s) is None
    assert AMGGuidance(AMGSettings(mode="code"), idx, never, caps, encode)(s) is not None   # G_spe always on


def test_threshold_fit_recovers_the_curve_and_its_ablations():
    t = np.linspace(981, 1, 25)
    true = Threshold("time", 0.3, 0.4, 0.005)
    fit, rms = fit_exponential(t, true(t))
    assert rms < 1e-4 and abs(fit.a - 0.3) < 2e-3 and abs(fit.b - 0.4) < 2e-3
    always = Threshold.always_on(0.25)
    assert np.all(always(t) == -np.inf) and np.all(always.curve(t) == 0.25)
    flat, _ = fit_exponential(t, np.full(25, 0.7))
    assert np.allclose(flat(t), 0.7)
    sig = np.random.default_rng(0).normal(0.5, 0.05, size=(40, 25))
    cal = calibrate(sig, t, 100.0)
    assert cal.n_trajectories == 40 and np.allclose(cal.curve, sig.max(0)) and 0 <= cal.fire_share <= 1
    # Table 5's thresholds from the same trajectories: the constant fires on as many of them as lambda_t does,
    # and with the switch always on G_sim's level sits at their lowest sigma
    assert cal.constant_fire_share == cal.fire_share and cal.constant.kind == "constant"
    assert cal.always.kind == "always" and cal.floor == sig.min() and np.all(cal.always.curve(t) == sig.min())


def test_bad_settings_give_clear_errors(train):
    imgs, _ = train
    idx = SimilarityIndex(imgs)
    with pytest.raises(ValueError, match="terms"):
        AMGSettings(terms=("spe", "nope"))
    with pytest.raises(ValueError, match="mode"):
        AMGSettings(mode="fast")
    with pytest.raises(ValueError, match="captions"):
        AMGGuidance(AMGSettings(), idx, Threshold())
    with pytest.raises(ValueError, match="kind"):
        Threshold("sometimes")
    with pytest.raises(ValueError, match="at least 10"):
        calibrate(np.zeros((3, 5)), np.arange(5))


def test_amg_is_a_registered_harness_method():
    from memlib.api.methods import available, make_method

    assert "amg" in available()
    m = make_method("amg", 30.0)
    assert m.value == 30.0 and m.knob.name == "c3"
    with pytest.raises(ValueError, match="c3"):
        make_method("amg", -1.0)


def test_gradient_goes_through_a_latent_decoder(train):
    """Latent models: sigma is measured on the decoded image, and its gradient flows back through the decoder."""
    imgs, _ = train
    idx = SimilarityIndex(imgs)
    w = torch.randn(C, 2, generator=torch.Generator().manual_seed(5))
    decode = lambda z: torch.einsum("cl,blhw->bchw", w, torch.nn.functional.interpolate(z, scale_factor=2))
    z = torch.randn(2, 2, S // 2, S // 2, generator=torch.Generator().manual_seed(6))
    sig, g = similarity_and_grad(idx, z, "ncc", to_pixels=decode)
    assert g.shape == z.shape
    v = torch.randn_like(z)
    f = lambda q: similarity_and_grad(idx, q, "ncc", to_pixels=decode)[0].double()
    fd = (f(z + 1e-2 * v) - f(z - 1e-2 * v)) / 2e-2
    torch.testing.assert_close((g.double() * v).flatten(1).sum(1), fd, atol=1e-3, rtol=1e-2)


def _sim_by_hand(idx, s, threshold, c3, gate):
    """G_sim on the code schedule, from Eq. 17 and the released code's weight, written out: eps + w sqrt(1 - abar)
    grad_{x_t} sigma, w = c3 max(sigma - level_t, 0) e^((1000 - t) / 170) on the rows ``gate`` lets through."""
    sig, g = similarity_and_grad(idx, s.x0_hat)
    level = float(threshold.curve(s.t))
    w = c3 * (sig - level).clamp_min(0) * float(np.exp((1000 - s.t) / 170)) * torch.as_tensor(gate)
    expected = s.eps + w.view(-1, 1, 1, 1) * (1 - s.alpha_bar) ** 0.5 * g / s.alpha_bar ** 0.5
    return expected, w


def test_code_schedule_weights_g_sim_by_the_margin_over_the_threshold(train):
    imgs, _ = train
    idx = SimilarityIndex(imgs)
    x = torch.stack([imgs[0] * 0.9, torch.rand(C, S, S, generator=torch.Generator().manual_seed(7)) * 2 - 1])
    cond, uncond = encode(["a", "b"]), torch.zeros(2, 1, C)
    sig = nearest(idx, state(x, cond, uncond).x0_hat)[0]
    assert sig[0] > sig[1] + 0.2                       # row 0 near a training image, row 1 not
    lam = float(sig[1] + sig[0]) / 2                     # the switch fires on row 0 only
    th = Threshold("time", lam, lam, 0.0)
    s = state(x, cond, uncond, t=400)
    record = {"_rows": 2}
    hook = AMGGuidance(AMGSettings(terms=("sim",), c3=2.0, schedule="code"), idx, th, record=record, rows=[0, 1])
    new = hook(s)
    expected, w = _sim_by_hand(idx, s, th, 2.0, [True, False])
    torch.testing.assert_close(new, expected)
    assert w[0] > 0 and w[1] == 0 and np.allclose(record["sim"][:, 0], w.numpy())
    # the switch always on: G_sim acts on row 1 too, its weight measured from the always-on level, not lambda_t
    always = Threshold.always_on(float(sig.min()) - 0.1)
    s = state(x, cond, uncond, t=400)
    new = AMGGuidance(AMGSettings(terms=("sim",), c3=2.0, schedule="code"), idx, always)(s)
    expected, w = _sim_by_hand(idx, s, always, 2.0, [True, True])
    torch.testing.assert_close(new, expected)
    assert (w > 0).all()


class Switch:
    """A threshold that fires at the steps listed (lambda = -inf there, +inf elsewhere), to drive the hold."""

    def __init__(self, fire_at):
        self.fire_at = set(fire_at)

    def __call__(self, t):
        return -np.inf if t in self.fire_at else np.inf

    def curve(self, t):
        return 0.0


@pytest.mark.parametrize("mode, fire_at, acting", [
    ("code", {900}, range(0, 10)),             # the firing step and the 9 after (the released code's g3_count = 10)
    ("code", {900, 760}, range(0, 17)),        # firing again restarts the hold: step 7 and the 9 after
    ("paper", {900, 760}, [0, 7]),             # the paper gates G_dup by the switch alone
])
def test_dedup_holds_as_the_released_code_does(train, mode, fire_at, acting):
    imgs, caps = train
    idx = SimilarityIndex(imgs)
    x = imgs[:1] * 0.9
    cond, uncond = encode(["a"]), torch.zeros(1, 1, C)
    steps = [900 - 20 * i for i in range(20)]
    record = {"_rows": 1}
    hook = AMGGuidance(AMGSettings(terms=("dup",), mode=mode, caption="nn"), idx, Switch(fire_at), caps, encode,
                       record=record, rows=[0])
    for i, t in enumerate(steps):
        s = state(x, cond, uncond, t=t)
        s.i, s.num_steps = i, len(steps)
        hook(s)
    assert np.flatnonzero(record["dup"][0] > 0).tolist() == list(acting)


def test_constant_threshold_fires_on_the_share_it_is_given():
    t = np.linspace(981, 1, 5)
    peaks = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    sig = np.tile(peaks[:, None] - 0.05, (1, 5))
    sig[:, 2] = peaks                                      # each trajectory peaks mid-way
    from memlib.amg.calibrate import fire_share
    for share, level in ((0.0, 0.9), (0.1, 0.85), (0.3, 0.65), (1.0, None)):
        th = constant_at_fire_share(sig, share)
        assert th.kind == "constant" and fire_share(sig, th, t) == share
        if level is not None:
            assert th.a == pytest.approx(level)
    # the fitted lambda_t's firing share carries over: equal false alarms on the calibration trajectories
    rng = np.random.default_rng(1)
    sig = rng.normal(0.5, 0.05, size=(200, 25)) + np.linspace(0, 0.1, 25)
    cal = calibrate(sig, np.linspace(981, 1, 25), 99.0)
    assert cal.fire_share > 0.02 and cal.constant_fire_share == pytest.approx(cal.fire_share, abs=1 / 200)
