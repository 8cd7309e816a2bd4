"""Throughput at Stable Diffusion size, on random weights built from configs (nothing is downloaded); writes
benchmarks/results/sd_scale-<size>-<dtype>-<device>.json and regenerates the table of every such file
(sd_scale.md beside it).

    .venv/bin/python benchmarks/sd_scale.py --device cuda --dtype fp16        # SD-v1, batches from free memory
    .venv/bin/python benchmarks/sd_scale.py --device cuda --dtype bf16
    .venv/bin/python benchmarks/sd_scale.py --size tiny --device cpu          # the tiny configuration (tests)
    .venv/bin/python benchmarks/sd_scale.py --table                           # print the table of the results

The model is SD-v1.x's UNet (diffusers' UNet2DConditionModel, 860 M parameters), CLIP ViT-L/14's text tower and
SD's VAE (``--size tiny``: memlib's tiny random Stable Diffusion), behind memlib's StableDiffusionBackend, so
every arm runs memlib's own code:

- detection: Wen et al.'s first-step d(p) (1 generation) through ``memlib.api.detection.detect``, batched,
  against a loop in the style of Wen's reference code (one prompt per call: encode the prompt and the empty
  prompt, one CFG-doubled UNet call, the norm) on the same prompts and initial noises; the two must agree;
- cfg: 50-step DDIM CFG (scale 7.5) through ``memlib.generation.generate``, images decoded;
- wen_pe, amg, prss: seconds per image, each relative to plain CFG run through the same plan runner. wen_pe is
  the registry's (it runs on any model) at l_target 0, so every prompt takes all 10 AdamW steps (its most
  expensive case). The registry's amg and prss are testbed-only (they calibrate on, and guard, the testbed's
  training set), so here they run as on a user's model: ``memlib.amg.amg_method`` over synthetic random
  training images, the switch always on (all three terms at every step: decode, and the gradient of the
  similarity through the VAE decoder), and ``memlib.prss.methods.prss_method`` (search over 4 rewrites, then
  re-anchoring on every prompt at every step);
- peak memory per arm: torch.cuda.max_memory_allocated on a GPU, the peak resident set on the CPU (with the
  1-minute load average when the arms start: CPU numbers from shared cores are slower than the cores allow).

Batches: ``--batch``, else memlib's ``default_batch_size`` (a quarter of the free GPU memory at 0.5 GB per SD
image; all of a small model's batch on the CPU), divided for the arms that keep gradients (``ARM_MEMORY``, an
untested guess); a GPU out-of-memory error halves the batch and runs the arm again.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
# CompVis/stable-diffusion-v1-4 unet/config.json (SD v1.1 to v1.5 share it)
SD_V1_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=768,
                  block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8, norm_num_groups=32,
                  down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                  up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
# its vae/config.json: 4 blocks = 3 downsamplings, latents 4 x 64 x 64 <-> images 3 x 512 x 512
SD_V1_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
                 block_out_channels=(128, 256, 512, 512), sample_size=512,
                 down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
# openai/clip-vit-large-patch14's text config (SD v1's text encoder)
CLIP_L14_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                     num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
                     bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
ARMS = ("detection", "cfg", "wen_pe", "amg", "prss")
ARM_MEMORY = {"detection": 1, "cfg": 1, "wen_pe": 8, "amg": 8, "prss": 2}   # x plain CFG's memory per image
COUNTS = {"sd-v1": {"cuda": (256, 16), "cpu": (2, 1)}, "tiny": {"cuda": (64, 8), "cpu": (16, 4)}}  # prompts, images
GUIDANCE, N_INDEX, N_REWRITES = 7.5, 64, 4
TARGET_SETTING = "one H100, sd-v1, fp16"


def build(size: str, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """memlib's StableDiffusionBackend over random weights of ``size`` ('sd-v1' or 'tiny')."""
    from memlib.backends.stable_diffusion import StableDiffusionBackend
    if size == "tiny":
        return StableDiffusionBackend.tiny_random(seed=seed).to(device)
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from memlib.schedule import SD_SCHEDULE
    from memlib.tokenizer import write_hf_tokenizer_files
    torch.manual_seed(seed)
    with torch.device(device):   # initialized where they run: 1 B parameters are slow to build on the CPU twice
        unet, vae = UNet2DConditionModel(**SD_V1_UNET), AutoencoderKL(**SD_V1_VAE)
        text = CLIPTextModel(CLIPTextConfig(**CLIP_L14_TEXT))
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = CLIPTokenizer.from_pretrained(str(write_hf_tokenizer_files(tmp)), model_max_length=77)
    sched = {"_class_name": "PNDMScheduler", **SD_SCHEDULE, "skip_prk_steps": True, "set_alpha_to_one": False,
             "steps_offset": 1, "clip_sample": False, "trained_betas": None}
    parts = [m.to(dtype) for m in (unet, vae, text)]
    return StableDiffusionBackend(*parts, tokenizer, sched, name=f"random-{size}").to(device)


def parameter_counts(backend) -> dict[str, int]:
    return {k: sum(p.numel() for p in getattr(backend, k).parameters()) for k in ("unet", "text_encoder", "vae")}


def choose_batch(backend, arm: str) -> int:
    """Images per model call for ``arm``: memlib's ``default_batch_size`` over the arm's memory factor."""
    from memlib.api.model_setup import default_batch_size
    return max(1, default_batch_size(backend) // ARM_MEMORY[arm])


@contextmanager
def peak_memory(device: torch.device, into: dict):
    """``into['peak_memory_gb']``: the most GPU memory allocated inside the block, or on the CPU the peak
    resident set (reset first where Linux allows; else the process's peak so far)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:
            Path("/proc/self/clear_refs").write_text("5")   # resets the VmHWM (peak resident set) counter
        except OSError:
            pass
    yield
    if device.type == "cuda":
        into["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
        return
    try:
        status = Path("/proc/self/status").read_text().split("VmHWM:")[1]
        into["peak_memory_gb"] = int(status.split()[0]) / 2 ** 20
    except (OSError, IndexError):
        into["peak_memory_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def timed(device: torch.device, fn, *args):
    """(fn(*args), wall seconds), GPU work included."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0


def shrinking(fn, batch: int):
    """(fn(batch), batch), halving the batch after a GPU out-of-memory error."""
    while True:
        try:
            return fn(batch), batch
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
            torch.cuda.empty_cache()
            batch //= 2


@torch.no_grad()
def reference_loop(backend, prompts: list[str], gen_cfg) -> np.ndarray:
    """d(p) one prompt at a time, as Wen's reference code runs it (pipeline call per prompt)."""
    from memlib.first_step_magnitude import first_step, initial_noises
    t = first_step(backend, gen_cfg)
    out = []
    for p in prompts:
        emb = backend.encode_prompts(["", p])                     # negative (empty) prompt and prompt, every call
        x = initial_noises(backend, [p], gen_cfg)                 # the x_T memlib draws for p
        n = len(x)
        eps = backend.eps(torch.cat([x, x]), torch.full((2 * n,), t, device=x.device), emb.repeat_interleave(n, 0))
        eps_u, eps_c = eps.chunk(2)
        out.append(float((eps_c - eps_u).flatten(1).norm(dim=1).mean()))
    return np.array(out)


def detection_arm(backend, prompts: list[str], num_steps: int, batch: int) -> dict:
    from memlib.api.detection import detect
    from memlib.generation import GenerationConfig
    dev = backend.device
    kw = dict(model=backend.name, backend=backend, steps=1, gens=1, num_steps=num_steps, progress=False)
    warm = dev.type == "cuda"   # kernels, autotuning, allocator; small next to a CPU call at this size
    if warm:
        detect(prompts[:batch], batch_size=batch, **kw)
    out: dict = {"prompts": len(prompts)}
    with peak_memory(dev, out):
        (res, batch), sec = timed(dev, lambda: shrinking(lambda b: detect(prompts, batch_size=b, **kw), batch))
    if warm:
        reference_loop(backend, prompts[:2], GenerationConfig(num_steps=num_steps, n_gens=1))
    loop, loop_sec = timed(dev, reference_loop, backend, prompts, GenerationConfig(num_steps=num_steps, n_gens=1))
    out.update(batch=batch, batched_prompts_per_s=len(prompts) / sec, loop_prompts_per_s=len(prompts) / loop_sec,
               speedup=loop_sec / sec, batched_s=sec, loop_s=loop_sec,
               max_relative_score_difference=float(np.max(np.abs(res.scores - loop) / np.abs(loop))),
               finite_scores=int(np.isfinite(res.scores).sum()))
    return out


def run_plan(backend, method, prompts: list[str], gen_cfg, chunk: int) -> dict:
    """``method`` applied and sampled ``chunk`` prompts at a time (one image each), as the harness runs it."""
    from memlib.generation import generate
    from memlib.mitigate.method import Context
    seconds = evals = acted = 0.0
    for s in range(0, len(prompts), chunk):
        sub = prompts[s:s + chunk]

        def once():
            plan = method.apply(Context(backend, sub, gen_cfg))
            g = generate(plan.backend or backend, plan.prompts, plan.gen_cfg or gen_cfg, progress=False,
                         noise_keys=plan.noise_keys, cond_override=plan.cond_override, extra_hooks=plan.extra_hooks,
                         branches=plan.branches)
            return plan, g
        (plan, g), sec = timed(backend.device, once)
        seconds += sec
        evals += (plan.prep_evals_per_image + g.model_evals_per_image) * len(sub)
        acted += float(np.sum(plan.acted))
    return {"seconds_per_image": seconds / len(prompts), "model_evals_per_image": evals / len(prompts),
            "acted": int(acted)}


def methods(backend) -> dict:
    """{arm: (Method, how it was built)}: plain CFG and PE from the registry; AMG and PRSS over a user's setup."""
    from memlib.amg.methods import AMGSetup, AMGSettings, Threshold, amg_method
    from memlib.api.methods import describe, make_method
    from memlib.mitigate.similarity import SimilarityIndex
    from memlib.prss.methods import PRSSSetup, prss_method
    gen = torch.Generator(device=backend.device).manual_seed(0)
    images = torch.rand((N_INDEX, *backend.image_shape), generator=gen, device=backend.device)
    amg = AMGSetup(SimilarityIndex(images), Threshold.always_on(0.0), AMGSettings(mode="paper", schedule="constant"),
                   [f"training caption {i}" for i in range(N_INDEX)], to_pixels=backend.decode)
    styles = ("a photograph", "a painting", "a sketch", "a render")[:N_REWRITES]
    prss = PRSSSetup(0.0, 1e-3, lambda p: [f"{s} of {p}" for s in styles])
    scope = {k: describe(k)["scope"] for k in ("wen_pe", "amg", "prss")}
    return {
        "cfg": (make_method("none"), "registry 'none'"),
        "wen_pe": (make_method("wen_pe", 0.0), f"registry 'wen_pe' (scope {scope['wen_pe']}) at l_target 0: all "
                   "10 AdamW steps for every prompt"),
        "amg": (amg_method(amg, 1.0), f"registry 'amg' has scope {scope['amg']}; memlib.amg.amg_method over "
                f"{N_INDEX} random training images, switch always on, every term at every step"),
        "prss": (prss_method(prss, 0.0, "prss"), f"registry 'prss' has scope {scope['prss']}; "
                 f"memlib.prss.methods.prss_method, search over {N_REWRITES} rewrites, re-anchoring every step"),
    }


def method_arms(backend, names: list[str], prompts: list[str], num_steps: int, batch: int | None) -> dict:
    from memlib.generation import GenerationConfig
    gen_cfg = GenerationConfig(num_steps=num_steps, n_gens=1, guidance_scale=GUIDANCE, seed=0)
    built, out = methods(backend), {}
    for name in names:
        method, how = built[name]
        b0 = batch or choose_batch(backend, name)
        if backend.device.type == "cuda":   # warm-up, as for detection
            run_plan(backend, method, prompts[:b0], replace(gen_cfg, num_steps=2, batch_size=b0), b0)
        row = {"images": len(prompts), "how": how}
        with peak_memory(backend.device, row):
            r, b = shrinking(lambda b: run_plan(backend, method, prompts, replace(gen_cfg, batch_size=b), b), b0)
        row.update(r, batch=b, images_per_s=1 / r["seconds_per_image"])
        out[name] = row
    if "cfg" in out:
        for name in names:
            out[name]["relative_to_cfg"] = out[name]["seconds_per_image"] / out["cfg"]["seconds_per_image"]
    return out


def targets(result: dict) -> dict:
    """The targets at SD-v1 fp16 on one H100, judged only where this run is that setting."""
    applies = result["size"] == "sd-v1" and result["dtype"] == "fp16" and "H100" in result["device"]
    det, arms = result.get("detection", {}), result.get("arms", {})
    rows = {"detection_prompts_per_s": (det.get("batched_prompts_per_s"), ">=", 100),
            "detection_speedup_over_loop": (det.get("speedup"), ">=", 5),
            "amg_relative_to_cfg": (arms.get("amg", {}).get("relative_to_cfg"), "<=", 2),
            "prss_relative_to_cfg": (arms.get("prss", {}).get("relative_to_cfg"), "<=", 2)}
    out = {"setting": TARGET_SETTING, "applies": applies}
    for k, (v, op, goal) in rows.items():
        met = None if v is None or not applies else bool(v >= goal if op == ">=" else v <= goal)
        out[k] = {"value": v, "target": f"{op} {goal}", "met": met}
    return out


def _fmt(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}g}"


def table(paths) -> str:
    """The Markdown table of sd_scale results files, one row per file."""
    head = ("| device | size | dtype | detection prompts/s (batch) | per-prompt loop prompts/s | speedup | "
            "CFG images/s (steps) | PE / AMG / PRSS x CFG s/image | peak GB (detection / CFG / AMG) | targets met |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for p in sorted(paths):
        r = json.loads(Path(p).read_text())
        d, a = r.get("detection", {}), r.get("arms", {})
        rel = " / ".join(_fmt(a.get(k, {}).get("relative_to_cfg"), 2) for k in ("wen_pe", "amg", "prss"))
        peak = " / ".join(_fmt(x.get("peak_memory_gb"), 2) for x in (d, a.get("cfg", {}), a.get("amg", {})))
        t = r.get("targets", {})
        met = [v["met"] for v in t.values() if isinstance(v, dict) and v["met"] is not None]
        verdict = f"{sum(met)} of {len(met)} measured" if t.get("applies") else f"n/a (not {TARGET_SETTING})"
        lines.append(f"| {r['device']} | {r['size']} | {r['dtype']} | {_fmt(d.get('batched_prompts_per_s'))} "
                     f"({d.get('batch', '-')}) | {_fmt(d.get('loop_prompts_per_s'))} | {_fmt(d.get('speedup'), 2)} | "
                     f"{_fmt(a.get('cfg', {}).get('images_per_s'))} ({r['steps']}) | {rel} | {peak} | {verdict} |")
    return "\n".join(lines) + "\n"


def write_table(folder: Path) -> Path:
    path = folder / "sd_scale.md"
    path.write_text("# Stable Diffusion size throughput (random weights; `benchmarks/sd_scale.py`)\n\nGenerated "
                    "from the sd_scale-*.json files beside this one; each file holds the settings, counts and "
                    "how each method was built. The targets (detection >= 100 prompts/s and >= 5x the per-prompt "
                    f"loop; AMG and PRSS each <= 2x plain CFG's seconds per image) are judged at {TARGET_SETTING} "
                    "only.\n\n" + table(folder.glob("sd_scale-*.json")))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:1 [best available]")
    ap.add_argument("--dtype", default=None, choices=["fp32", "fp16", "bf16"], help="[fp16 on a GPU, else fp32]")
    ap.add_argument("--size", default="sd-v1", choices=["sd-v1", "tiny"])
    ap.add_argument("--batch", type=int, default=None, help="images per model call [from free memory]")
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps of the CFG and method arms [50]")
    ap.add_argument("--prompts", type=int, default=None, help="detection prompts [256 on a GPU at sd-v1]")
    ap.add_argument("--images", type=int, default=None, help="images per CFG and method arm [16 on a GPU at sd-v1]")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {','.join(ARMS)}")
    ap.add_argument("--out", default=None, help="results JSON [benchmarks/results/sd_scale-SIZE-DTYPE-DEVICE.json]")
    ap.add_argument("--table", action="store_true", help="print the table of benchmarks/results and stop")
    a = ap.parse_args(argv)
    if a.table:
        print(table(RESULTS.glob("sd_scale-*.json")), end="")
        return 0
    from memlib.api.model_setup import resolve_device, resolve_dtype
    from memlib.provenance import cpu_model, device_info
    arms = [x for x in a.arms.split(",") if x]
    try:   # bad input: one line, before any model is built
        device = resolve_device(a.device)
        dtype = resolve_dtype(a.dtype, device)
        bad = [x for x in arms if x not in ARMS]
        if bad or not arms:
            raise ValueError(f"--arms {a.arms!r}: choose among {', '.join(ARMS)}")
        for name, v in (("--batch", a.batch), ("--steps", a.steps), ("--prompts", a.prompts), ("--images", a.images)):
            if v is not None and v < 1:
                raise ValueError(f"{name} {v}: give a positive number")
    except ValueError as e:
        print(f"sd_scale: error: {e}", file=sys.stderr)
        return 2
    n_prompts, n_images = COUNTS[a.size]["cuda" if device.type == "cuda" else "cpu"]
    n_prompts, n_images = a.prompts or n_prompts, a.images or n_images
    import diffusers
    import transformers
    diffusers.utils.logging.set_verbosity_error()   # its note on casting a model built in float32
    backend, build_s = timed(device, build, a.size, device, dtype)
    name = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
    dev_name = device_info() if device.type == "cpu" else f"cuda:{torch.cuda.get_device_name(device)}"
    result = {"benchmark": "sd_scale", "size": a.size, "device": dev_name, "cpu": cpu_model(), "dtype": name,
              "torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
              "python": platform.python_version(), "parameters": parameter_counts(backend), "build_s": build_s,
              "steps": a.steps, "guidance_scale": GUIDANCE, "batch_given": a.batch, "arms": {},
              "cpu_load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    prompts = [f"a photograph of object {i} on a table, in the style of painter {i % 7}" for i in range(n_prompts)]
    if "detection" in arms:
        result["detection"] = detection_arm(backend, prompts, 50, a.batch or choose_batch(backend, "detection"))
    rest = [x for x in ARMS[1:] if x in arms]
    if rest:
        if "cfg" not in rest:
            rest = ["cfg"] + rest   # the methods' costs are relative to plain CFG, run the same way
        result["arms"] = method_arms(backend, rest, prompts[:n_images], a.steps, a.batch)
    result["targets"] = targets(result)
    result["not_measured"] = [x for x in ARMS if x not in arms and x not in result["arms"]]
    slug = f"{a.size}-{name}-{dev_name}".replace(":", "_").replace(" ", "_")
    out = Path(a.out) if a.out else RESULTS / f"sd_scale-{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    print(f"wrote {out} and {write_table(out.parent)}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
