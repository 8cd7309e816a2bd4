"""The training loop: per-sample losses, sample hooks (IET-AGC's loss bank), shards, devices, loss state in the
checkpoint, UNet-only checkpoints, and processes that save side by side."""
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from memlib.checkpoint import CheckpointError, load_loss_state, load_weights, read_meta, save_checkpoint, \
    verify_checkpoint
from memlib.schedule import add_noise, sd_scheduler
from memlib.testbed.digits import DigitsDataConfig, digits_loss, make_digits_data, train_digits_model
from memlib.testbed.model import TextToImageConfig, TextToImageModel, UnconditionalConfig, make_unconditional_unet
from memlib.train import Batch, Losses, TrainConfig, contrastive_losses, reduce_losses, text_to_image_loss, \
    train_loop

SMALL_UNET = UnconditionalConfig(block_out_channels=(16, 32), num_class_embeds=10)
SMALL_T2I = TextToImageConfig(block_out_channels=(16, 32), cross_attention_dim=32, text_intermediate=128)


@pytest.fixture(scope="module")
def digits():
    return make_digits_data(DigitsDataConfig(n_duplicated=2, copies=3, max_images=64))


def _unet(seed=0):
    torch.manual_seed(seed)
    return make_unconditional_unet(SMALL_UNET)


def _t2i_data(model, n=12):
    g = torch.Generator().manual_seed(1)
    images = torch.rand(n, 3, 16, 16, generator=g) * 2 - 1
    ids = model.tokenizer([f"a red circle number {i}" for i in range(n)])
    return images, ids, model.tokenizer([""])[0]


class _ConstantModel(torch.nn.Module):
    """Predicts ``value`` everywhere and records its inputs: the digits UNet's call and the testbed's raw/encode."""

    def __init__(self, value=0.5, prediction_type="epsilon"):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))   # the device the loss moves the batch to
        self.value, self.seen, self.cfg = value, {}, SimpleNamespace(prediction_type=prediction_type)

    def forward(self, x, t, class_labels=None, return_dict=False):
        self.seen.update(x=x, t=t, labels=class_labels)
        return (torch.full_like(x, self.value),)

    def encode(self, ids):
        self.seen["ids"] = ids
        return ids.float()

    def raw(self, x, t, emb):
        self.seen.update(x=x, t=t)
        return torch.full_like(x, self.value)


def test_add_noise_is_the_forward_process():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 3, 16, 16, generator=g), torch.randn(6, 3, 16, 16, generator=g)
    a = sd_scheduler("ddpm").alphas_cumprod.float()[torch.randint(0, 1000, (6,), generator=g)].view(-1, 1, 1, 1)
    assert torch.equal(add_noise(x0, noise, a), a.sqrt() * x0 + (1 - a).sqrt() * noise)


def test_digits_loss_by_hand_on_two_samples():
    """Ho et al. 2020, Eq. 14 per sample; the draws (t, noise, label dropout) in this order keep retraining
    a checkpoint bit-identical."""
    data = SimpleNamespace(images=torch.linspace(-1, 1, 12).view(3, 1, 2, 2), labels=torch.tensor([4, 7, 9]))
    model = _ConstantModel(0.5)
    loss_fn = digits_loss(model, data, n_classes=10, label_dropout=0.5)
    out = loss_fn(torch.tensor([2, 0]), torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    t = torch.randint(0, 1000, (2,), generator=g)
    noise = torch.randn(2, 1, 2, 2, generator=g)
    dropped = torch.rand(2, generator=g) < 0.5
    a = sd_scheduler("ddpm").alphas_cumprod.float()[t].view(-1, 1, 1, 1)
    x0 = data.images[[2, 0]]
    assert torch.equal(out.t, t) and torch.equal(model.seen["t"], t)
    assert torch.equal(model.seen["x"], a.sqrt() * x0 + (1 - a).sqrt() * noise)
    assert model.seen["labels"].tolist() == [10 if d else lab for d, lab in zip(dropped.tolist(), [9, 4])]
    torch.testing.assert_close(out.loss, ((0.5 - noise) ** 2).flatten(1).mean(1))
    assert torch.equal(out.mean, F.mse_loss(torch.full_like(noise, 0.5), noise))   # the loop's default, bit for bit
    torch.testing.assert_close(out.loss.mean(), out.mean)
    torch.testing.assert_close(reduce_losses(out, torch.ones(2)), out.mean)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_text_to_image_loss_by_hand_on_two_samples(prediction_type):
    """The CFG-dropout loss: a dropped caption becomes the empty prompt's ids; draws in the order dropout, t, noise."""
    images = torch.linspace(-1, 1, 24).view(2, 3, 2, 2)
    ids, empty = torch.tensor([[1, 5, 2], [1, 6, 2]]), torch.tensor([1, 2, 0])
    model = _ConstantModel(-0.25, prediction_type)
    out = text_to_image_loss(model, images, ids, empty, 0.5)(torch.tensor([1, 0]), torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    dropped = torch.rand(2, generator=g) < 0.5
    t = torch.randint(0, 1000, (2,), generator=g)
    noise = torch.randn(2, 3, 2, 2, generator=g)
    a = sd_scheduler("ddpm").alphas_cumprod.float()[t].view(-1, 1, 1, 1)
    x0 = images[[1, 0]]
    target = noise if prediction_type == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * x0
    assert torch.equal(out.t, t) and torch.equal(model.seen["x"], a.sqrt() * x0 + (1 - a).sqrt() * noise)
    assert model.seen["ids"].tolist() == [empty.tolist() if d else row for d, row in
                                          zip(dropped.tolist(), [[1, 6, 2], [1, 5, 2]])]
    torch.testing.assert_close(out.loss, ((-0.25 - target) ** 2).flatten(1).mean(1))
    assert torch.equal(out.mean, F.mse_loss(torch.full_like(target, -0.25), target))


def test_contrastive_losses_per_pair_average_to_the_symmetric_cross_entropy():
    logits = torch.randn(6, 6, generator=torch.Generator().manual_seed(2)) * 4
    target = torch.arange(6)
    c = contrastive_losses(logits)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    assert torch.equal(c.mean, expected) and c.loss.shape == (6,)
    torch.testing.assert_close(c.loss.mean(), expected)


def test_a_scalar_loss_trains_exactly_as_its_per_sample_losses(digits, tmp_path):
    cfg = TrainConfig(steps=3, batch_size=8, warmup_steps=2, checkpoint_every=2)
    unet, state = train_digits_model(digits, SMALL_UNET, cfg, tmp_path / "per-sample", progress=False)
    scalar = _unet(cfg.seed)
    per_sample = digits_loss(scalar, digits, 10)
    scalar_state = train_loop(scalar, lambda idx, gen: per_sample(idx, gen).mean, len(digits.images), cfg,
                              tmp_path / "scalar", {"run": 1}, progress=False)  # a scalar-returning loss_fn trains
    assert state["history"] == scalar_state["history"]
    for k, v in unet.state_dict().items():
        assert torch.equal(v, scalar.state_dict()[k]), k


def test_reduce_losses_weights_drop_samples_and_all_dropped_is_zero():
    loss = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    out = Losses(loss)
    assert reduce_losses(out).item() == 2.5
    assert reduce_losses(out, torch.tensor([1.0, 0.0, 1.0, 0.0])).item() == 2.0  # mean over the kept samples
    zero = reduce_losses(out, torch.zeros(4))
    zero.backward()
    assert zero.item() == 0.0 and torch.equal(loss.grad, torch.zeros(4))
    with pytest.raises(ValueError, match="shape"):
        reduce_losses(out, torch.ones(3))


def test_sample_hook_sees_timesteps_and_drops_samples_with_skip_counts(digits, tmp_path):
    drawn = []

    def drop_low_rows(b: Batch):  # e.g. Wen's filter: weight 0 where a per-sample statistic passes tau
        assert b.losses.loss.shape == b.losses.t.shape == (8,) and "x_t" in b.losses.info
        drawn.append(b.rows.clone())
        return (b.rows >= 20).float()

    cfg = TrainConfig(steps=3, batch_size=8, checkpoint_every=3)
    _, state = train_digits_model(digits, SMALL_UNET, cfg, tmp_path / "ck", progress=False, sample_hook=drop_low_rows)
    rows = torch.cat(drawn)
    expected = torch.bincount(rows[rows < 20], minlength=len(digits.images))
    assert torch.equal(state["loss_state"]["skips"], expected) and expected.sum() > 0
    with pytest.raises(TypeError, match="per-sample"):
        train_loop(_unet(), lambda idx, gen: torch.tensor(1.0, requires_grad=True), 4, cfg, tmp_path / "s", {},
                   progress=False, sample_hook=drop_low_rows)


def test_rows_restrict_batches_to_the_shard_and_are_checked_on_resume(digits, tmp_path):
    seen = []
    loss = digits_loss(unet := _unet(), digits, 10)

    def spy(idx, gen):
        seen.append(idx.clone())
        return loss(idx, gen)

    shard = torch.arange(3, len(digits.images), 4)
    cfg = TrainConfig(steps=4, batch_size=8, checkpoint_every=2)
    train_loop(unet, spy, len(digits.images), cfg, tmp_path / "ck", {"run": 1}, progress=False, stop_at=2,
               rows=shard)
    assert torch.isin(torch.cat(seen), shard).all()
    assert read_meta(tmp_path / "ck")["rows"]["n"] == len(shard)
    with pytest.raises(CheckpointError, match="other settings"):
        train_loop(unet, spy, len(digits.images), cfg, tmp_path / "ck", {"run": 1}, progress=False, rows=shard[1:])
    with pytest.raises(ValueError, match="rows"):
        train_loop(unet, spy, len(digits.images), cfg, tmp_path / "x", {}, progress=False, rows=[len(digits.images)])


def agc_hook(ratio=1.0, decay=0.8, bins=10):
    """IET-AGC's rule (Liu et al. 2024, Sec. 3.3): keep i iff r * l_i >= M[t_i]; every sample then updates its
    timestep's entry in turn, M <- decay M + (1 - decay) l. Coarse timestep bins so a short test run skips."""
    def hook(b: Batch):
        bank = b.state.setdefault("bank", torch.zeros(bins))
        loss, t = b.losses.loss.detach().cpu(), (b.losses.t.cpu() * bins) // 1000
        keep = (ratio * loss >= bank[t]).float()
        for li, ti in zip(loss.tolist(), t.tolist()):
            bank[ti] = decay * bank[ti] + (1 - decay) * li
        return keep
    return hook


def test_loss_bank_and_skip_counts_are_checkpointed_and_resume_exactly(digits, tmp_path):
    cfg = TrainConfig(steps=5, batch_size=8, checkpoint_every=2)
    run = dict(progress=False, sample_hook=agc_hook(), ship_loss_state=True)
    unet, straight = train_digits_model(digits, SMALL_UNET, cfg, tmp_path / "straight", **run)
    assert straight["loss_state"]["skips"].sum() > 0, "the bank should have skipped some samples"
    train_digits_model(digits, SMALL_UNET, cfg, tmp_path / "resumed", stop_at=3, **run)
    again, resumed = train_digits_model(digits, SMALL_UNET, cfg, tmp_path / "resumed", **dict(run, loss_state={}))
    assert resumed["history"] == straight["history"]
    for k in ("bank", "skips"):
        assert torch.equal(resumed["loss_state"][k], straight["loss_state"][k]), k
    for k, v in again.state_dict().items():
        assert torch.equal(v, unet.state_dict()[k]), k
    shipped = load_loss_state(tmp_path / "resumed")
    assert torch.equal(shipped["bank"], straight["loss_state"]["bank"])
    path = tmp_path / "resumed" / "loss_state.safetensors"
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        verify_checkpoint(tmp_path / "resumed")


def test_proxy_rounds_keep_the_broadcast_weights_and_accept_moved_rows(digits, tmp_path):
    """IET (Liu et al. 2024): proxies train on their shards, the server averages and broadcasts the weights, and
    IET-AGC+ moves rows between shards; each proxy keeps its optimizer, RNG and loss bank across rounds."""
    cfg = TrainConfig(steps=4, batch_size=8, checkpoint_every=2)
    shards = [torch.arange(0, 34), torch.arange(34, len(digits.images))]
    proxies = [_unet() for _ in shards]
    banks = [{} for _ in shards]
    first = []

    def run(k, stop_at, **kw):
        loss = digits_loss(proxies[k], digits, 10)

        def spy(idx, gen):
            first.append(next(proxies[k].parameters()).detach().clone())
            return loss(idx, gen)
        return train_loop(proxies[k], spy, len(digits.images), cfg, tmp_path / f"proxy-{k}", {"run": k},
                          progress=False, stop_at=stop_at, rows=shards[k], sample_hook=agc_hook(),
                          loss_state=banks[k], **kw)

    for k in (0, 1):
        run(k, 2)
    avg = {n: (proxies[0].state_dict()[n] + proxies[1].state_dict()[n]) / 2 for n in proxies[0].state_dict()}
    shards = [torch.cat([shards[0][1:], shards[1][:1]]), torch.cat([shards[1][1:], shards[0][:1]])]  # ring move
    with pytest.raises(CheckpointError, match="rows"):
        run(0, 4)
    first.clear()
    for k in (0, 1):
        proxies[k].load_state_dict(avg)
        state = run(k, 4, new_round=True)
        assert state["step"] == 4 and len(state["history"]) == 4
        name = next(iter(proxies[k].named_parameters()))[0]
        assert torch.equal(first[2 * k], avg[name])  # round 2 started from the average, not the checkpoint
    assert read_meta(tmp_path / "proxy-1")["rows"]["n"] == len(shards[1])


def test_unet_only_checkpoint_skips_the_frozen_text_encoder_and_loads_into_the_unet(tmp_path):
    from safetensors.torch import load_file

    torch.manual_seed(0)
    cfg = TextToImageConfig(block_out_channels=(16, 32), cross_attention_dim=32, text_intermediate=128,
                            text_pretrain_steps=1)  # frozen text encoder, as a fine-tuned testbed has
    model = TextToImageModel(cfg)
    images, ids, empty = _t2i_data(model)
    tcfg = TrainConfig(steps=2, batch_size=4, checkpoint_every=1)
    loss = text_to_image_loss(model, images, ids, empty, 0.1)
    train_loop(model, loss, 12, tcfg, tmp_path / "ft", {"run": 1}, progress=False, stop_at=1, part="unet")
    state = train_loop(model, loss, 12, tcfg, tmp_path / "ft", {"run": 1}, progress=False, part="unet")
    assert state["step"] == 2
    stored = load_file(str(tmp_path / "ft" / "model.safetensors"))
    assert set(stored) == set(model.unet.state_dict()) and read_meta(tmp_path / "ft")["part"] == "unet"
    fresh = TextToImageModel(cfg)
    fresh.text_encoder.load_state_dict(model.text_encoder.state_dict())
    load_weights(tmp_path / "ft", fresh)
    load_weights(tmp_path / "ft", bare := TextToImageModel(cfg).unet)  # or straight into the UNet
    for k, v in model.unet.state_dict().items():
        assert torch.equal(v, fresh.unet.state_dict()[k]) and torch.equal(v, bare.state_dict()[k]), k
    save_checkpoint(tmp_path / "full", model, {})
    size = lambda name: (tmp_path / name / "model.safetensors").stat().st_size
    assert size("ft") < size("full")


def test_device_argument_on_cpu_is_the_default_run(digits, tmp_path):
    cfg = TrainConfig(steps=1, batch_size=8)
    a, _ = train_digits_model(digits, SMALL_UNET, cfg, tmp_path / "a", progress=False)
    b, _ = train_digits_model(digits, SMALL_UNET, cfg, tmp_path / "b", progress=False, device="cpu")
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_training_on_a_gpu_follows_the_cpu_run(digits, tmp_path):
    cfg = TrainConfig(steps=3, batch_size=8, checkpoint_every=3)
    cpu, s_cpu = train_digits_model(digits, SMALL_UNET, cfg, tmp_path / "cpu", progress=False)
    gpu, s_gpu = train_digits_model(digits, SMALL_UNET, cfg, tmp_path / "gpu", progress=False, device="cuda",
                                    sample_hook=lambda b: torch.ones_like(b.losses.loss))
    assert gpu.device.type == "cuda" and torch.tensor(s_gpu["history"]).allclose(torch.tensor(s_cpu["history"]),
                                                                                 atol=1e-3)
    load_weights(tmp_path / "gpu", back := _unet())  # the checkpoint loads on the CPU
    for k, v in cpu.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v, atol=1e-3, rtol=1e-3)


SHARD = """
import sys, torch
torch.set_num_threads(1)
from memlib.testbed.digits import DigitsDataConfig, make_digits_data, train_digits_model
from memlib.testbed.model import UnconditionalConfig
from memlib.train import TrainConfig
k, folder = int(sys.argv[1]), sys.argv[2]
d = make_digits_data(DigitsDataConfig(n_duplicated=2, copies=3, max_images=64))
train_digits_model(d, UnconditionalConfig(block_out_channels=(16, 32), num_class_embeds=10),
                   TrainConfig(steps=4, batch_size=8, checkpoint_every=1), folder, progress=False,
                   rows=torch.arange(k, len(d.images), 2))
"""


def _run_together(scripts_args):
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(s), *a], stderr=subprocess.PIPE, text=True)
             for s, a in scripts_args]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]


@pytest.mark.slow
def test_two_processes_train_disjoint_shards_into_one_parent_without_colliding(digits, tmp_path):
    parent = tmp_path / "run"
    _run_together([(SHARD, [str(k), str(parent / f"shard-{k}")]) for k in (0, 1)])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the two processes ran
    try:
        for k in (0, 1):
            verify_checkpoint(parent / f"shard-{k}")
            ref, _ = train_digits_model(digits, SMALL_UNET, TrainConfig(steps=4, batch_size=8, checkpoint_every=1),
                                        tmp_path / f"alone-{k}", progress=False,
                                        rows=torch.arange(k, len(digits.images), 2))
            load_weights(parent / f"shard-{k}", got := _unet())
            for name, v in ref.state_dict().items():
                assert torch.equal(v, got.state_dict()[name]), (k, name)
    finally:
        torch.set_num_threads(threads)
    assert sorted(p.name for p in parent.iterdir()) == ["shard-0", "shard-1"]  # no temporary folders left


SAVE = """
import sys, time, torch
from memlib.checkpoint import save_checkpoint
torch.manual_seed(int(sys.argv[2]))
m = torch.nn.Linear(64, 64)
time.sleep(max(0.0, float(sys.argv[3]) - time.time()))  # start together, so the saves overlap
for i in range(300):
    save_checkpoint(sys.argv[1], m, {"i": i}, extra_state={"i": i}, json_files={"history.json": [i]})
"""


def test_two_processes_saving_one_checkpoint_never_collide(tmp_path):
    # one '<name>.tmp' folder shared by both writers fails this within a few hundred saves
    import time

    start = str(time.time() + 8)  # after both have imported torch
    _run_together([(SAVE, [str(tmp_path / "ck"), str(seed), start]) for seed in (0, 1)])
    assert read_meta(tmp_path / "ck")["i"] == 299
    verify_checkpoint(tmp_path / "ck")
    assert os.listdir(tmp_path) == ["ck"]
