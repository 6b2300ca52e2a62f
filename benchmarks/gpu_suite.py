"""The whole GPU measurement in one run: model ceilings, CLIP-only, DINOv2-only, both, decoders, end to end.

Made for the lent device machine (PyTorch, torchvision, transformers; no pymilvus or celery; no network), so it
needs only torch, transformers, numpy and Pillow; torchvision (nvJPEG) and imsim itself are used where they import.
Every stage is time-boxed, and the JSON under ``--out`` is rewritten after each stage, so a run that is cut short
still returns what it measured. Stages:

1. ``ceiling``: CLIP ViT-B/32 (vision tower + projection) and DINOv2 ViT-B/14 at their published sizes (random
   weights: speed is real, similarity meaningless), fp16, inputs already on the GPU, per batch size: images/s with
   one synchronisation per timed loop. ``both`` runs the two on the same batch, as an ingest does.
2. ``decode``: JPEG decode of the same 1024x768 corpus on the host (Pillow with DCT draft, all cores) and on the
   GPU (``torchvision.io.decode_jpeg(device="cuda")``, batched, then an antialiased resize to 224 on the GPU).
3. ``ingest``: imsim's real pipeline (read, hash, decode, resize, batch, pinned copies, fp16 forward) from files
   to a no-op sink with the same random-weight models, CLIP only, DINOv2 only, and both: images/s, and the CPU-ms
   per image of the host side.

    bash benchmarks/gpu_suite.sh                      # on the device: JSON under $OUT, < 8 minutes
    python benchmarks/gpu_suite.py --smoke --out /tmp/gpu-smoke   # tiny models on CPU: checks the script runs
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CLIP_B32: dict[str, Any] = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, patch_size=32
)
DINOV2_B14: dict[str, Any] = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, patch_size=14)
TINY: dict[str, Any] = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def clip_vision(smoke: bool) -> torch.nn.Module:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    arch = {**CLIP_B32, **TINY} if smoke else CLIP_B32
    return CLIPVisionModelWithProjection(CLIPVisionConfig(image_size=224, projection_dim=512, **arch))


def dinov2(smoke: bool) -> torch.nn.Module:
    from transformers import Dinov2Config, Dinov2Model

    arch = {**DINOV2_B14, **{k: v for k, v in TINY.items() if k != "intermediate_size"}} if smoke else DINOV2_B14
    return Dinov2Model(Dinov2Config(image_size=518, **arch))


def timed_loop(step: Callable[[], Any], device: torch.device, seconds: float, min_iters: int = 3) -> tuple[int, float]:
    """Run ``step`` until ``seconds`` have passed (at least ``min_iters`` times); one synchronisation at the end."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    step()  # warm-up (cuDNN / kernel selection)
    sync()
    iters, t0 = 0, time.perf_counter()
    while iters < min_iters or time.perf_counter() - t0 < seconds:
        step()
        iters += 1
        if iters % 4 == 0:
            sync()
    sync()
    return iters, time.perf_counter() - t0


def stage_ceiling(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    models = {"clip": clip_vision(args.smoke), "dinov2": dinov2(args.smoke)}
    models = {n: m.to(device=device, dtype=dtype).eval() for n, m in models.items()}
    forward = {
        "clip": lambda x: models["clip"](pixel_values=x).image_embeds,
        "dinov2": lambda x: models["dinov2"](pixel_values=x).pooler_output,
    }
    out: dict[str, Any] = {}
    for batch in args.batches:
        x = torch.randn(batch, 3, 224, 224, device=device, dtype=dtype)
        row: dict[str, float] = {}
        with torch.inference_mode():
            for name in ("clip", "dinov2"):
                iters, seconds = timed_loop(functools.partial(forward[name], x), device, args.seconds)
                row[name] = round(iters * batch / seconds, 1)

            def both(x: torch.Tensor = x) -> Any:
                return forward["clip"](x), forward["dinov2"](x)

            iters, seconds = timed_loop(both, device, args.seconds)
            row["both"] = round(iters * batch / seconds, 1)
        out[str(batch)] = row
        print(f"ceiling batch {batch}: {row}", flush=True)
    if device.type == "cuda":
        out["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def make_corpus(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """``count`` JPEGs of ``size`` derived from the repository's bundled photos (each crop and quality differs)."""
    photos = sorted((ROOT / "samples" / "photos").glob("*.jpg"))
    sources = [Image.open(p).convert("RGB") for p in photos] or [Image.new("RGB", size, (90, 120, 150))]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        src = sources[i % len(sources)]
        w, h = src.size
        box = (i % 7 * w // 40, i % 5 * h // 40, w - i % 3 * w // 40, h - i % 4 * h // 40)
        path = folder / f"{i:05d}.jpg"
        src.crop(box).resize(size, Image.Resampling.BILINEAR).save(path, quality=85 + i % 10)
        paths.append(path)
    return paths


def stage_decode(args: argparse.Namespace, files: list[Path], device: torch.device) -> dict[str, Any]:
    datas = [p.read_bytes() for p in files]
    out: dict[str, Any] = {"files": len(files), "cpu_cores": os.cpu_count()}

    def pillow(data: bytes) -> np.ndarray:
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", (336, 336))  # imsim's draft for a 224-px model (1.5x its input size)
        return np.asarray(image.convert("RGB").resize((224, 224), Image.Resampling.BICUBIC))

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        t0, c0 = time.perf_counter(), time.process_time()
        list(pool.map(pillow, datas))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out["pillow_draft_threads"] = {
        "images_per_s": round(len(datas) / wall, 1),
        "cpu_ms_per_image": round(cpu * 1e3 / len(datas), 2),
    }
    print(f"decode pillow+draft: {out['pillow_draft_threads']}", flush=True)
    try:
        import torchvision
        from torchvision.io import decode_jpeg
    except ImportError as exc:
        out["nvjpeg"] = f"skipped: torchvision not importable ({exc})"
        return out
    out["torchvision"] = torchvision.__version__
    if device.type != "cuda":
        out["nvjpeg"] = "skipped: no CUDA device"
        return out
    encoded = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    batch = args.decode_batch

    def gpu_decode() -> None:
        for i in range(0, len(encoded), batch):
            images = decode_jpeg(encoded[i : i + batch], device="cuda")
            stacked = torch.stack(
                [
                    torch.nn.functional.interpolate(im[None].float(), size=(224, 224), mode="bicubic", antialias=True)[0]
                    for im in images
                ]
            )
            stacked.clamp_(0, 255)

    iters, seconds = timed_loop(gpu_decode, device, args.seconds, min_iters=1)
    out["nvjpeg"] = {"images_per_s": round(iters * len(encoded) / seconds, 1), "batch": batch}
    print(f"decode nvjpeg: {out['nvjpeg']}", flush=True)
    return out


def stage_ingest(args: argparse.Namespace, files: list[Path], device: torch.device, work: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    try:
        from imsim import bench
        from imsim.models import load_models
        from imsim.models.testing import build_random_models, build_tiny_clip, build_tiny_dinov2
        from imsim.settings import Settings
    except ImportError as exc:
        return {"skipped": f"imsim not importable here ({exc}); pip install pydantic pydantic-settings to run this stage"}
    if args.smoke:
        dirs = {"clip": build_tiny_clip(work / "clip"), "dinov2": build_tiny_dinov2(work / "dinov2")}
    else:
        dirs = build_random_models(work / "models")
    settings = Settings(data_dir=work / "data", device=device.type).replace(
        clip_model=str(dirs["clip"]), dinov2_model=str(dirs["dinov2"]), precision="fp16" if device.type == "cuda" else "fp32"
    )
    paths = [str(p) for p in files]
    out: dict[str, Any] = {}
    for selection in (["clip"], ["dinov2"], ["clip", "dinov2"]):
        models = load_models(settings, selection)
        run = bench.run_ingest(paths, settings, models, sink="none", warmup=64)
        out["+".join(selection)] = run.as_dict()
        print(
            f"ingest {'+'.join(selection)}: {run.images_per_s:.1f} images/s, {run.cpu_ms_per_image:.2f} CPU-ms/image", flush=True
        )
        del models
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT", "/tmp/gpu-suite"))
    parser.add_argument("--smoke", action="store_true", help="tiny models, few images: check the script on CPU")
    parser.add_argument("--batches", default="64,256,512", help="batch sizes for the ceiling")
    parser.add_argument("--seconds", type=float, default=6.0, help="timed seconds per measurement")
    parser.add_argument("--files", type=int, default=2048, help="1024x768 JPEGs for the decode and ingest stages")
    parser.add_argument("--decode-batch", type=int, default=128)
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    if args.smoke:
        args.batches, args.seconds, args.files = [4], 0.2, 24
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    result: dict[str, Any] = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
        "dtype": str(dtype),
        "smoke": args.smoke,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    def save() -> None:
        (out_dir / "gpu_suite.json").write_text(json.dumps(result, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stages: list[tuple[str, Callable[[], dict[str, Any]]]] = [("ceiling", lambda: stage_ceiling(args, device, dtype))]
        files: list[Path] = []

        def corpus() -> dict[str, Any]:
            files.extend(make_corpus(work / "corpus", args.files, (1024, 768)))
            return {"files": len(files), "size": "1024x768"}

        stages += [
            ("corpus", corpus),
            ("decode", lambda: stage_decode(args, files, device)),
            ("ingest", lambda: stage_ingest(args, files, device, work)),
        ]
        for name, stage in stages:
            t0 = time.perf_counter()
            try:
                result[name] = stage()
            except Exception as exc:  # keep what the other stages measured
                result[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=5)}
                print(f"{name} failed: {exc}", flush=True)
            result.setdefault("stage_seconds", {})[name] = round(time.perf_counter() - t0, 1)
            save()
    print(f"wrote {out_dir / 'gpu_suite.json'}")


if __name__ == "__main__":
    main()
