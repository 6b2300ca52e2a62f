"""Every kind of bad input from the issue, mixed into a folder of good images and queued to a real worker.

Each case is either stored correctly or recorded as a failure with a readable reason; the
worker stays alive and the rest of the job completes. ``CASES`` is the table in
docs/bad-input.md: a test checks the two list the same cases.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from imsim.client.local import Client
from imsim.images import load_image
from imsim.jobs.records import JobStore
from imsim.sources.names import path_id, printable
from imsim.sources.paths import discover
from imsim.store import VectorStore

from .support.faults import wait_finished
from .support.servers import ROOT, SAMPLES
from .support.settings import make_settings

PHOTO = SAMPLES / "photos" / "chelsea.jpg"
PIXEL_LIMIT = 50_000_000

# case -> (file name, expected: "stored" or a substring of the failure reason)
CASES: dict[str, tuple[str, str]] = {
    "truncated JPEG": ("truncated.jpg", "cannot decode image"),
    "zero-byte file": ("empty.jpg", "empty file (0 bytes)"),
    "text file named .jpg": ("notes.jpg", "not a recognised image format"),
    "CMYK JPEG": ("cmyk.jpg", "stored"),
    "16-bit PNG": ("gray16.png", "stored"),
    "PNG with alpha": ("alpha.png", "stored"),
    "palette GIF": ("palette.gif", "stored"),
    "animated GIF": ("animated.gif", "stored"),
    "EXIF-rotated JPEG": ("rotated.jpg", "stored"),
    "decompression bomb": ("bomb.png", "exceeds the limit"),
    "missing path": ("missing.jpg", "no such file"),
    "directory symlink loop": ("loop", "not followed"),
    "extremely large valid image": ("large.jpg", "stored"),
    "symlink out of the allowed roots": ("escape.jpg", "outside the allowed roots"),
    "unreadable file (permissions)": ("", "permission denied"),  # needs a non-root worker: see test_images
    "aspect-ratio bomb (230-byte 50000x1 PNG)": ("wide.png", "stored"),
    "file name that is not UTF-8": (os.fsdecode(b"latin1-\xe9.jpg"), "not valid UTF-8"),
    "NUL byte in a listed path": ("nul\x00byte.jpg", "NUL byte"),
    "path longer than the store holds": ("long", "bytes of UTF-8"),
    "FIFO named like an image": ("pipe.jpg", "not a regular file"),
    "name with a trailing space": ("trailing.jpg ", "stored"),
    ".avif file in a folder": ("modern.avif", "stored"),
    "image whose decode needs more than the memory budget": ("huge-rgba.png", "over IMSIM_DECODE_MEMORY_MB"),
    "file name with terminal control bytes": ("clear\x1b[2Jscreen\x1b[8m.jpg", "stored"),
}
LISTED_ONLY = ("missing path", "NUL byte in a listed path", "path longer than the store holds")


def png_bomb(path: Path, side: int) -> None:
    """A valid greyscale PNG of side×side pixels whose zlib stream is tiny (all zeros)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", body)
        + chunk(b"IEND", b"")
    )


def build_folder(root: Path, outside: Path) -> dict[str, str]:
    """Good images plus every bad case; returns case -> path."""
    shutil.copytree(SAMPLES / "flags", root / "good")
    photo = Image.open(PHOTO).convert("RGB")
    buf = io.BytesIO()
    photo.save(buf, "JPEG")
    (root / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("meeting notes, not a picture\n")
    photo.convert("CMYK").save(root / "cmyk.jpg", "JPEG")
    gray = np.asarray(photo.convert("L"), dtype=np.uint16) * 257
    Image.fromarray(gray).save(root / "gray16.png")
    assert Image.open(root / "gray16.png").mode.startswith("I")
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    rgba.save(root / "alpha.png")
    photo.convert("P", palette=Image.Palette.ADAPTIVE).save(root / "palette.gif")
    frames = [photo, photo.transpose(Image.Transpose.FLIP_TOP_BOTTOM), Image.new("RGB", photo.size, "blue")]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    photo.save(root / "rotated.jpg", "JPEG", exif=exif)
    png_bomb(root / "bomb.png", 30_000)  # 900 Mpx, 0.9 MB on disk
    os.symlink(root, root / "good" / "loop")  # a directory loop
    photo.resize((8000, 6000), Image.Resampling.BILINEAR).save(root / "large.jpg", "JPEG", quality=90)  # 48 Mpx
    outside.mkdir()
    shutil.copy(PHOTO, outside / "secret.jpg")
    os.symlink(outside / "secret.jpg", root / "escape.jpg")
    Image.new("RGB", (50_000, 1), (200, 30, 30)).save(root / "wide.png")
    shutil.copy(os.fsencode(PHOTO), os.path.join(os.fsencode(root), b"latin1-\xe9.jpg"))
    os.mkfifo(root / "pipe.jpg")
    shutil.copy(PHOTO, root / "trailing.jpg ")
    photo.save(root / "modern.avif")
    Image.new("RGBA", (4000, 4000), (10, 20, 30, 128)).save(
        root / "huge-rgba.png"
    )  # 16 Mpx: ~153 MB to decode (RGBA 4 B + RGB 3 B a pixel, one strip)
    shutil.copy(PHOTO, root / "clear\x1b[2Jscreen\x1b[8m.jpg")
    paths = {case: str(root / name) for case, (name, _) in CASES.items() if name}
    paths["path longer than the store holds"] = str(root / ("é" * 2100))
    return paths


def test_every_bad_input_fails_alone_with_a_reason_and_retry_requeues_only_failures(
    tiny_model_dirs, tmp_path, redis_url, milvus_uri, start_worker, models
):
    root = tmp_path / "in"
    root.mkdir()
    paths = build_folder(root, tmp_path / "outside")
    settings = make_settings(
        tiny_model_dirs,
        tmp_path / "data",
        redis_url=redis_url,
        milvus_uri=milvus_uri,
        chunk_size=8,
        max_image_pixels=PIXEL_LIMIT,
        decode_memory_mb=80,  # the 8000x6000 JPEG decodes at 1/8 (~14 MB); a 4000x4000 RGBA PNG needs ~153 MB
        allowed_roots=str(root),
        queue="bad" + tmp_path.name[-8:],
    )
    worker = start_worker(settings, "bad")
    files = discover([root]).files + [paths[c] for c in LISTED_ONLY]
    assert not any("/loop/" in f for f in files), "the directory loop was followed"
    good = discover([root / "good"]).files
    assert len(good) == 24

    client = Client(settings, embedders=models)
    job_id = client.jobs.ingest(files)
    status = wait_finished(JobStore(redis_url), job_id)
    status.failures = {printable(p): reason for p, reason in JobStore(redis_url).reads.failures(job_id, 0, 1000)}
    assert worker.proc.poll() is None, "the worker died"

    expected_failures = {
        printable(paths[c]): want for c, (_, want) in CASES.items() if c in paths and want not in ("stored", "not followed")
    }
    assert set(status.failures) == set(expected_failures)
    for path, want in expected_failures.items():
        assert want in status.failures[path], f"{path}: {status.failures[path]!r}"
    assert "resolves to" in status.failures[paths["symlink out of the allowed roots"]]
    assert "\\x00" in printable(paths["NUL byte in a listed path"])  # named so it always prints
    stored = [paths[c] for c, (_, want) in CASES.items() if want == "stored"]
    assert status.done == len(good) + len(stored) and status.total == len(files)
    assert {printable(p): r for p, r in client.jobs.job(job_id, failures=1000).as_dict()["failures"].items()} == status.failures

    store = VectorStore(settings)
    clip = store.versions.collection_name(models["clip"].info)
    rows = store.rows.get(clip, [path_id(p) for p in stored], output_fields=["path", "width", "height"])
    assert set(r["path"] for r in rows.values()) == set(stored)
    size = lambda case: (rows[path_id(paths[case])]["width"], rows[path_id(paths[case])]["height"])  # noqa: E731
    assert size("EXIF-rotated JPEG") == (300, 451)  # 451×300 stored sideways; orientation applied
    assert size("extremely large valid image") == (8000, 6000)
    # The animated GIF is embedded from its first frame, exactly as a query of that frame is.
    first = Image.open(paths["animated GIF"]).convert("RGB")
    stored_vec = store.rows.get_vectors(clip, [path_id(paths["animated GIF"])])[path_id(paths["animated GIF"])]
    assert float(np.dot(stored_vec, client.models.embed(first, ["clip"])["clip"])) > 0.999

    # Fix one file, then retry: only the failures are queued, as a new job linked to the old one.
    shutil.copy(PHOTO, paths["truncated JPEG"])
    retry_id = client.jobs.retry(job_id)
    assert retry_id
    again = wait_finished(JobStore(redis_url), retry_id)
    assert again.total == len(expected_failures) and again.done == 1 and again.failed == len(expected_failures) - 1
    assert again.retry_of == job_id and client.jobs.job(job_id).retried_by == retry_id
    assert paths["truncated JPEG"] not in dict(client.jobs.failures(retry_id))
    # every failure was re-queued by its raw bytes (the non-UTF-8 and NUL names included), not by its printable name
    # (which would fail again as "no such file"): each fails again for its own reason
    retried = {printable(p): reason for p, reason in client.jobs.failures(retry_id)}
    assert set(retried) == set(expected_failures) - {printable(paths["truncated JPEG"])}
    assert all(expected_failures[p] in reason for p, reason in retried.items()), retried
    assert (
        load_image(paths["truncated JPEG"]).sha256
        == store.rows.get(clip, [path_id(paths["truncated JPEG"])], output_fields=["sha256"])[path_id(paths["truncated JPEG"])][
            "sha256"
        ]
    )
    store.close()


def test_docs_table_lists_every_case():
    doc = (ROOT / "docs" / "bad-input.md").read_text().split("## Requests to `imsim serve`")[0]  # the files' table
    documented = set(re.findall(r"^\| ([^|]+?) \|", doc, flags=re.M)) - {"Input", "---"}
    assert documented == set(CASES)
