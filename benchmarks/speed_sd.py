#!/usr/bin/env python
"""Speed of nested diffusion against diffusers' own StableDiffusionPipeline, same NFE budget.

The UNet has the real Stable Diffusion 1.5 architecture (its ``unet/config.json`` as a literal
below) with random weights, so the timings are those of SD1.5 without downloading it; the VAE
is SD1.5-shaped too, the text encoder is a real-shaped CLIP-L (12 layers, 768 wide) with a small
vocabulary and a tokenizer written on the fly. Nothing is downloaded.

Rows, for each batch size:

* ``diffusers K·M steps``: ``StableDiffusionPipeline`` with DDIM (trailing) and K·M steps,
  ``output_type="pt"`` (its first and only image comes at the end, after one VAE decode);
* ``nested K×M, latents only``: nested diffusion, K outer × M inner steps, frames not decoded;
* ``nested K×M, decode every frame``: the same, every anytime frame decoded by the VAE;
* ``vanilla K·M (ours)``: this package's vanilla DDIM on the same adapter (overhead check).

Columns: total seconds, seconds per NFE (network time: the one final VAE decode is subtracted
from the diffusers row), time to the first viewable image, and peak memory
(``torch.cuda.max_memory_allocated`` on GPU; peak resident set size, sampled every 5 ms, on CPU).
Classifier-free guidance is on (one doubled batch = one NFE, in both implementations).

    python benchmarks/speed_sd.py                                  # GPU: fp16, 512×512, batch 1 and 4, 10×10
    OMP_NUM_THREADS=1 python benchmarks/speed_sd.py --device cpu   # CPU: fp32, 64×64, batch 1, 2×2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import string
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from nested_diffusion import NestedPipeline  # noqa: E402

#: runwayml/stable-diffusion-v1-5, unet/config.json
SD15_UNET_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

#: runwayml/stable-diffusion-v1-5, vae/config.json
SD15_VAE_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

#: runwayml/stable-diffusion-v1-5, scheduler/scheduler_config.json (schedule part), DDIM trailing
SD15_SCHEDULE: dict[str, Any] = {
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
    "clip_sample": False, "set_alpha_to_one": True, "steps_offset": 1, "timestep_spacing": "trailing",
    "prediction_type": "epsilon",
}


def build_pipeline(device: torch.device, dtype: torch.dtype, text_layers: int):
    """A StableDiffusionPipeline with the SD1.5 UNet/VAE architecture and random weights."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(tempfile.mkdtemp(prefix="speed-sd-tok-"))
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in string.ascii_lowercase:
            vocab[c + suffix] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    try:
        tokenizer = CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"),
                                  model_max_length=77)
        if len(tokenizer) < len(vocab):
            raise TypeError
    except TypeError:  # transformers 4
        tokenizer = CLIPTokenizer(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"),
                                  model_max_length=77)
    torch.manual_seed(0)
    with torch.device(device):  # initialise the weights where they will run (fast on GPU)
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
        vae = AutoencoderKL(**SD15_VAE_CONFIG)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072, num_hidden_layers=text_layers,
            num_attention_heads=12, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=DDIMScheduler(**SD15_SCHEDULE), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device, dtype)
    for module in (unet, vae, text_encoder):
        module.eval()
    return pipe


class Meter:
    """Wall time and peak memory of a block: CUDA allocator peak on GPU, sampled RSS on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __call__(self, fn: Callable[[], Any]) -> tuple[float, int, Any]:
        cuda = self.device.type == "cuda"
        peak = [0]
        stop = threading.Event()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            def poll() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], self._rss())
                    time.sleep(0.005)

            peak[0] = self._rss()
            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
        start = time.perf_counter()
        result = fn()
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        if cuda:
            peak[0] = torch.cuda.max_memory_allocated()
        else:
            stop.set()
            poller.join()
            peak[0] = max(peak[0], self._rss())
        return seconds, peak[0], result


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(pipe, nested: NestedPipeline, device: torch.device, batch: int, size: tuple[int, int], outer: int,
          inner: int, guidance: float, prompt: str, repeats: int = 3) -> list[dict[str, Any]]:
    """One batch size: four rows (diffusers, nested latents, nested decoded, our vanilla)."""
    meter = Meter(device)
    h, w = size
    nfe = outer * inner
    common = dict(prompt=prompt, num_images=batch, guidance_scale=guidance, height=h, width=w)

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(0)

    # warm-up (kernels, allocator, attention backends) for both code paths
    pipe(prompt, num_images_per_prompt=batch, num_inference_steps=1, guidance_scale=guidance, height=h, width=w,
         output_type="pt")
    nested.anytime(**common, outer_steps=1, inner_steps=1, output_type="pt").run()

    rows = []
    # one VAE decode (to subtract the diffusers row's final decode from its network time)
    latents = nested.anytime(**common, outer_steps=1, inner_steps=1, output_type="latent").run().latents
    session = nested.anytime(**common, outer_steps=1, inner_steps=1, output_type="latent")
    decode_s, _, _ = meter(lambda: session.decode(latents, "pt"))

    def run_diffusers() -> tuple[float, float, float]:
        seconds, peak, _ = meter(lambda: pipe(prompt, num_images_per_prompt=batch, num_inference_steps=nfe,
                                              guidance_scale=guidance, height=h, width=w, generator=gen(),
                                              output_type="pt"))
        return seconds, seconds, peak

    def run_nested(output_type: str) -> tuple[float, float, float]:
        first = [None]
        start = time.perf_counter()

        def go() -> None:
            s = nested.anytime(**common, outer_steps=outer, inner_steps=inner, generator=gen(),
                               output_type=output_type)
            for frame in s:
                if first[0] is None:
                    if output_type == "latent":  # the first *viewable* frame needs one decode
                        s.decode(frame.latents, "pt")
                    sync(device)
                    first[0] = time.perf_counter() - start

        seconds, peak, _ = meter(go)
        return seconds, first[0], peak

    def run_vanilla() -> tuple[float, float, float]:
        seconds, peak, _ = meter(lambda: nested.vanilla(**common, num_inference_steps=nfe, sampler="ddim", eta=0.0,
                                                        generator=gen(), output_type="pt").run())
        return seconds, seconds, peak

    # repeated, interleaved runs (machine load hits every method alike); medians are reported
    runs: dict[str, list[tuple[float, float, float]]] = {"diffusers": [], "latent": [], "pt": [], "vanilla": []}
    for _ in range(repeats):
        runs["diffusers"].append(run_diffusers())
        runs["latent"].append(run_nested("latent"))
        runs["pt"].append(run_nested("pt"))
        runs["vanilla"].append(run_vanilla())
    med = {k: tuple(statistics.median(r[i] for r in v) for i in range(3)) for k, v in runs.items()}

    seconds, first, peak = med["diffusers"]
    rows.append(dict(method=f"diffusers SD, {nfe} DDIM steps", nfe=nfe, batch=batch, total=seconds,
                     per_nfe=(seconds - decode_s) / nfe, first=first, peak=peak))
    seconds, first, peak = med["latent"]
    latent_total = seconds
    rows.append(dict(method=f"nested {outer}×{inner}, latents only", nfe=nfe, batch=batch, total=seconds,
                     per_nfe=seconds / nfe, first=first, peak=peak))
    seconds, first, peak = med["pt"]
    rows.append(dict(method=f"nested {outer}×{inner}, decode every frame", nfe=nfe, batch=batch, total=seconds,
                     per_nfe=(seconds - outer * decode_s) / nfe, first=first, peak=peak,
                     decode_per_frame=(seconds - latent_total) / outer,
                     decode_share=(seconds - latent_total) / seconds))
    seconds, first, peak = med["vanilla"]
    rows.append(dict(method=f"vanilla {nfe} DDIM steps (ours)", nfe=nfe, batch=batch, total=seconds,
                     per_nfe=(seconds - decode_s) / nfe, first=first, peak=peak))
    for row in rows:
        row["decode_one"] = decode_s
    return rows


def markdown(rows: list[dict[str, Any]], device: torch.device) -> str:
    memory = "peak GPU memory (MiB)" if device.type == "cuda" else "peak RSS (MiB)"
    lines = [f"| method | batch | NFEs | total (s) | s / NFE | first image (s) | {memory} |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['batch']} | {r['nfe']} | {r['total']:.3f} | {r['per_nfe']:.4f} | "
                     f"{r['first']:.3f} | {r['peak'] / 2**20:.0f} |")
    lines.append("")
    for r in rows:
        if "decode_per_frame" in r:
            lines.append(f"- batch {r['batch']}: decoding every frame costs {r['decode_per_frame'] * 1000:.1f} ms per "
                         f"frame ({100 * r['decode_share']:.1f}% of the run); one VAE decode alone: "
                         f"{r['decode_one'] * 1000:.1f} ms")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 …")
    p.add_argument("--dtype", default="auto", choices=["auto", "float16", "bfloat16", "float32"],
                   help="auto: float16 on GPU, float32 on CPU")
    p.add_argument("--size", type=int, default=None, help="image height = width in pixels (default: 512 GPU, 64 CPU)")
    p.add_argument("--batch", default=None, help="comma-separated batch sizes (default: '1,4' GPU, '1' CPU)")
    p.add_argument("--outer", type=int, default=None, help="outer steps K (default: 10 GPU, 2 CPU)")
    p.add_argument("--inner", type=int, default=None, help="inner steps M (default: 10 GPU, 2 CPU)")
    p.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale")
    p.add_argument("--text-layers", type=int, default=12, help="CLIP text encoder layers (12 = CLIP-L)")
    p.add_argument("--attention-slicing", action="store_true", help="pipe.enable_attention_slicing()")
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs per method; medians are reported")
    args = p.parse_args(argv)

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    gpu = device.type == "cuda"
    dtype = getattr(torch, args.dtype) if args.dtype != "auto" else (torch.float16 if gpu else torch.float32)
    size = args.size or (512 if gpu else 64)
    batches = [int(b) for b in (args.batch or ("1,4" if gpu else "1")).split(",")]
    outer, inner = args.outer or (10 if gpu else 2), args.inner or (10 if gpu else 2)
    for name, value in (("--size", size), ("--outer", outer), ("--inner", inner), ("--text-layers", args.text_layers)):
        if value < 1:
            p.error(f"{name} must be positive, got {value}")
    if size % 8:
        p.error(f"--size must be a multiple of 8, got {size}")

    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # random-weight models: no "cast with to()" advice
    t0 = time.perf_counter()
    pipe = build_pipeline(device, dtype, args.text_layers)
    if args.attention_slicing:
        pipe.enable_attention_slicing()
    nested = NestedPipeline.from_pipe(pipe)
    build_s = time.perf_counter() - t0
    name = torch.cuda.get_device_name(device) if gpu else f"CPU ({torch.get_num_threads()} threads)"
    params = sum(p.numel() for p in pipe.unet.parameters()) / 1e6
    print(f"device: {name}; dtype: {str(dtype).split('.')[-1]}; {size}×{size} px (latents {size // 8}×{size // 8}); "
          f"guidance {args.guidance}; SD1.5 UNet ({params:.0f} M params, random weights); built in {build_s:.1f} s; "
          f"torch {torch.__version__}", flush=True)
    rows = []
    with torch.inference_mode():
        for batch in batches:
            rows += bench(pipe, nested, device, batch, (size, size), outer, inner, args.guidance, "a photo of a cat",
                          args.repeats)
    print()
    print(markdown(rows, device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
