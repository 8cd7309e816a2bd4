"""``torchrun -m memlib detect``: two gloo ranks on the CPU give one process's CSV, calibration and summary, and
resume shard by shard (``memlib.api.distributed``)."""
import csv
import json
import os
import subprocess
import sys

import pytest

from memlib.api import distributed
from memlib.api.store import RowStore

PROMPTS = [f"a photo number {i} of a thing" for i in range(10)] + ["a photo number 3 of a thing"]   # one repeat
NEGATIVES = [f"negative prompt {i}" for i in range(7)]
# the batches of --batch-size 2 are prompts (0, 1), (2, 3), ...; batch k runs on rank k mod 2
ON_RANK_1 = PROMPTS[2]
THREADS = max(1, (os.cpu_count() or 2) // 2)   # each of 2 ranks gets half the cores: so does the single process


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from memlib.backends.stable_diffusion import StableDiffusionBackend
    base = tmp_path_factory.mktemp("dist")
    (base / "p.txt").write_text("\n".join(PROMPTS) + "\n")
    (base / "neg.txt").write_text("\n".join(NEGATIVES) + "\n")
    StableDiffusionBackend.tiny_random(seed=3).save_pretrained(base / "tiny-sd")
    return base


def _detect(inputs, out, ranks: int, *extra):
    args = ["-m", "memlib", "detect", "--model", str(inputs / "tiny-sd"), "--prompts", str(inputs / "p.txt"),
            "--num-steps", "3", "--batch-size", "2", "--out", str(out), "--quiet", *extra]
    if ranks > 1:
        args = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks), *args]
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS))
    run = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


@pytest.mark.slow
def test_two_gloo_ranks_write_what_one_process_writes_and_resume_per_shard(inputs, tmp_path):
    calibrate = ("--calibrate", str(inputs / "neg.txt"))
    one = _detect(inputs, tmp_path / "one" / "scores.csv", 1, *calibrate)
    two = _detect(inputs, tmp_path / "two" / "scores.csv", 2, *calibrate)
    for name in ("scores.csv", "scores.calibration.csv"):   # same rows, order, columns and digits
        assert (tmp_path / "two" / name).read_text() == (tmp_path / "one" / name).read_text(), name
    summaries = [json.loads((tmp_path / d / "scores.summary.json").read_text()) for d in ("one", "two")]
    for s in summaries:
        s.pop("seconds_per_prompt")
    assert summaries[0] == summaries[1] and summaries[0]["n_flagged"] >= 1
    assert one.count("\n") == two.count("\n") and "scored 10 prompt(s) now, 0 read back" in two
    assert not list((tmp_path / "two").glob("*shard*")) and not list((tmp_path / "two").glob(".*shard*"))

    # an interrupted run: rank 1 had finished one prompt before the run was killed
    three = tmp_path / "three"
    three.mkdir()
    shard = three / "scores.shard-1-of-2.csv"
    (three / "scores.shard-1-of-2.csv.settings.json").write_text(
        (tmp_path / "two" / "scores.csv.settings.json").read_text())
    with open(shard, "w", newline="") as f:
        w = csv.DictWriter(f, list(_rows(tmp_path / "two" / "scores.csv")[0]))
        w.writeheader()
        w.writerow({"index": 0, "prompt": ON_RANK_1, "memorized": "", "kind": "", "source": "p.txt:3",
                    "score": "9.99", "flagged": ""})
    out = _detect(inputs, three / "scores.csv", 2)
    assert "scored 9 prompt(s) now, 1 read back" in out
    scores = {r["prompt"]: float(r["score"]) for r in _rows(three / "scores.csv")}
    reference = {r["prompt"]: float(r["score"]) for r in _rows(tmp_path / "one" / "scores.csv")}
    assert scores.pop(ON_RANK_1) == 9.99   # read back from the shard, not scored again
    # the rest in other batches than the first run's: equal up to float rounding
    assert scores == pytest.approx({t: v for t, v in reference.items() if t != ON_RANK_1}, rel=1e-5)
    assert not shard.exists()

    # a finished run rerun on two ranks: everything read back from the merged CSV
    assert "scored 0 prompt(s) now, 10 read back" in _detect(inputs, tmp_path / "one" / "scores.csv", 2,
                                                             *calibrate)


@pytest.mark.parametrize("n_ranks", [1, 2, 3, 5])
def test_every_prompt_is_on_exactly_one_rank_in_whole_batches(n_ranks):
    texts = [f"p{i}" for i in range(11)]
    shards = [distributed.shard(texts, 3, r, n_ranks) for r in range(n_ranks)]
    assert sorted(t for s in shards for t in s) == sorted(texts)
    assert shards[0][:3] == ["p0", "p1", "p2"]
    if n_ranks > 1:
        assert shards[1][:3] == ["p3", "p4", "p5"]   # the batches one process forms, dealt in turn
    with pytest.raises(ValueError, match="rank 2 of 2"):
        distributed.shard(texts, 3, 2, 2)


def test_shard_files_share_no_name_or_lock_with_the_merged_file(tmp_path):
    merged = RowStore(tmp_path / "scores.csv", {"a": 1}, ["prompt", "score"], "prompt")
    shards = [RowStore(distributed.shard_path(tmp_path / "scores.csv", r, 2), {"a": 1}, ["prompt", "score"],
                       "prompt") for r in range(2)]   # a shared lock would refuse the second writer
    assert [s.path.name for s in shards] == ["scores.shard-0-of-2.csv", "scores.shard-1-of-2.csv"]
    shards[1].add([{"prompt": "x", "score": "1"}])
    shards[1].discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".scores.csv.lock", "scores.csv", "scores.csv.settings.json", ".scores.shard-0-of-2.csv.lock",
         "scores.shard-0-of-2.csv", "scores.shard-0-of-2.csv.settings.json"])
    assert merged.rows == {}


def test_outside_torchrun_there_is_one_rank_and_the_device_is_left_alone(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.world() == (0, 1)
    assert distributed.start("cpu") == "cpu" and distributed.start(None) is None
    assert distributed.broadcast({"x": 1}) == {"x": 1} and distributed.all_gather(3) == [3]
