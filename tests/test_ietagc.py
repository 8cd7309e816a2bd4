"""IET-AGC's per-sample rules (Liu et al., ECCV 2024; IET-AGC+): the loss bank, the skip rule, TAA, MSR."""
import math

import pytest
import torch

from memlib.ietagc.agc import AGCHook, augment_magnitude, redistribute, taa_strength
from memlib.train import Batch, Losses


def _batch(loss, t, state):
    return Batch(0, torch.arange(len(loss)), Losses(torch.tensor(loss), torch.tensor(t)), state)


def test_agc_skips_against_the_bank_then_updates_it_sample_by_sample():
    hook, state = AGCHook(r=2.0, beta=0.8, n_timesteps=10), {}
    w = hook(_batch([1.0, 0.5, 2.0], [3, 3, 7], state))
    assert w.tolist() == [1.0, 1.0, 1.0]                    # an empty bank skips nothing
    m3 = 0.8 * (0.8 * 0 + 0.2 * 1.0) + 0.2 * 0.5            # the two t = 3 samples, in turn
    assert state["bank"][3].item() == pytest.approx(m3) and state["bank"][7].item() == pytest.approx(0.4)
    w = hook(_batch([0.05, 0.2, 0.1], [3, 7, 7], state))
    # skip when r * l < M[t]: 0.1 < 0.26 (skip); 0.4 >= 0.4 (keep); 0.2 < 0.4 (skip; M[7] before this batch)
    assert w.tolist() == [0.0, 1.0, 0.0]
    assert hook.last["keep"].tolist() == [False, True, False]
    assert hook.last["strength"][1].item() == pytest.approx(1.0)   # exactly at the boundary: full strength
    with pytest.raises(ValueError, match="timesteps"):
        hook(_batch([1.0], [10], state))


def test_taa_strength_and_magnitude():
    s = taa_strength(torch.tensor([1.0, 2.0, 1.0]), torch.tensor([2.0, 2.0, 0.0]), r=2.0, kappa=5.0)
    assert s[0].item() == pytest.approx(1.0) and s[1].item() == pytest.approx(math.exp(-5.0)) and s[2] == 0
    assert augment_magnitude(torch.tensor([1.0, 0.5])) == 3 and augment_magnitude(torch.tensor([0.1])) == 0


def test_redistribution_passes_the_most_skipped_quarter_around_the_ring():
    shards = [torch.arange(0, 4), torch.arange(4, 8), torch.arange(8, 12)]
    skips = torch.zeros(12, dtype=torch.long)
    skips[[2, 5, 11]] = 3
    skips[[6, 7]] = 1                                            # a tie: row 6 goes before row 7
    new = redistribute(shards, skips, 0.25)
    assert [len(s) for s in new] == [4, 4, 4]
    assert sorted(torch.cat(new).tolist()) == list(range(12))
    assert 11 in new[0].tolist() and 2 in new[1].tolist() and 5 in new[2].tolist()
    assert 2 not in new[0].tolist() and 6 in new[1].tolist()     # row 6 was not among shard 1's top quarter
    assert [s.tolist() for s in redistribute(shards, skips, 0.0)] == [s.tolist() for s in shards]


def test_agc_in_the_training_loop_counts_skips_and_checkpoints_its_bank(tmp_path):
    from memlib.checkpoint import load_train_state
    from memlib.testbed.digits import DigitsDataConfig, make_digits_data, train_digits_model
    from memlib.testbed.model import UnconditionalConfig
    from memlib.train import TrainConfig

    data = make_digits_data(DigitsDataConfig(n_duplicated=2, copies=3, max_images=64))
    hook, dropped = AGCHook(r=2.0, n_timesteps=1000), []

    def counting(b):
        w = hook(b)
        dropped.append(int((w == 0).sum()))
        return w

    cfg = TrainConfig(steps=8, batch_size=32, checkpoint_every=4, warmup_steps=1)
    _, state = train_digits_model(data, UnconditionalConfig(block_out_channels=(16, 32)), cfg, tmp_path / "ck",
                                  progress=False, sample_hook=counting)
    bank, skips = state["loss_state"]["bank"], state["loss_state"]["skips"]
    assert bank.shape == (1000,) and int((bank > 0).sum()) > 0
    assert int(skips.sum()) == sum(dropped)                       # the loop counts exactly the hook's skips
    saved = load_train_state(tmp_path / "ck")["loss_state"]
    assert torch.equal(saved["bank"], bank)                       # the bank resumes with the proxy


SPEC = {"iet": {"shards": 3, "rounds": 3, "steps_per_round": 2, "batch_size": 8, "warmup_steps": 1, "agc": True,
                "msr": True, "taa": True},
        "data": {"n_duplicated": 2, "copies": 3, "max_images": 48},
        "model": {"block_out_channels": [16, 32]}, "probe": {"n_samples": 0}}


def _proxy_mean(folder, k):
    from memlib.checkpoint import load_weights
    from memlib.ietagc.iet import _flat, average
    from memlib.ietagc.launch import digits_trainer
    from memlib.testbed.digits import DigitsDataConfig, make_digits_data
    from memlib.testbed.model import UnconditionalConfig

    make_model, _ = digits_trainer(make_digits_data(DigitsDataConfig(**SPEC["data"])),
                                   UnconditionalConfig(block_out_channels=(16, 32)))
    flats = []
    for s in range(k):
        m = make_model()
        load_weights(folder / f"proxy-{s}", m)
        flats.append(_flat(m))
    return average(flats), make_model()


@pytest.mark.slow
def test_two_gloo_ranks_aggregate_to_the_mean_of_the_proxies(tmp_path):
    import json
    import socket
    import subprocess
    import sys

    from memlib.checkpoint import load_weights
    from memlib.ietagc.iet import _flat

    (tmp_path / "run.json").write_text(json.dumps(SPEC))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "memlib.ietagc.launch", "--config", str(tmp_path / "run.json"),
           "--folder", str(tmp_path / "iet")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    mean, model = _proxy_mean(tmp_path / "iet", 3)
    last = torch.load(tmp_path / "iet" / "rounds" / "round-002.pt", weights_only=True)
    assert torch.equal(last["weights"], mean)                     # 3 shards on 2 ranks, summed in shard order
    load_weights(tmp_path / "iet" / "final", model)               # shipped in float16
    assert torch.allclose(_flat(model), mean, rtol=1e-3, atol=1e-4)
    rounds = sorted(p.name for p in (tmp_path / "iet" / "rounds").glob("round-*.pt"))
    assert rounds == ["round-000.pt", "round-001.pt", "round-002.pt"]
    record = torch.load(tmp_path / "iet" / "rounds" / "round-001.pt", weights_only=True)
    from memlib.testbed.digits import DigitsDataConfig, make_digits_data
    n = len(make_digits_data(DigitsDataConfig(**SPEC["data"])).images)
    assert record["own_weights"] and sorted(torch.cat(record["shards"]).tolist()) == list(range(n))   # MSR moved


@pytest.mark.slow
def test_a_run_killed_after_a_round_resumes_to_the_same_weights(tmp_path):
    from memlib.ietagc.launch import run

    straight = run(SPEC, tmp_path / "straight")
    run(SPEC, tmp_path / "resumed", stop_after_round=1)           # killed once round 1 was written
    (tmp_path / "resumed" / "rounds" / "round-001.pt").unlink()   # ... or after its proxies, before its record
    resumed = run(SPEC, tmp_path / "resumed")
    for k, v in straight.items():
        assert torch.equal(v, resumed[k]), k


def test_premise_compares_one_row_per_planted_digit_with_ordinary_rows():
    from memlib.ietagc.premise import loss_premise
    from memlib.testbed.digits import DigitsDataConfig, make_digits_data
    from memlib.testbed.model import UnconditionalConfig, make_unconditional_unet

    data = make_digits_data(DigitsDataConfig(n_duplicated=3, copies=4, max_images=60))
    torch.manual_seed(0)
    unet = make_unconditional_unet(UnconditionalConfig(block_out_channels=(16, 32), num_class_embeds=10))
    res = loss_premise(unet, data, timesteps=(100, 900), n_ordinary=10, n_noise=2)
    assert res["n_planted"] == 3 and res["n_ordinary"] == 10 and set(res["per_timestep"]) == {100, 900}
    for v in res["per_timestep"].values():
        assert 0 <= v["auc_planted_lower"] <= 1 and v["ratio"] == pytest.approx(v["planted_mean"] / v["ordinary_mean"])
    with pytest.raises(ValueError, match="planted and ordinary"):
        loss_premise(unet, make_digits_data(DigitsDataConfig(n_duplicated=0, max_images=60)), timesteps=(100,))
