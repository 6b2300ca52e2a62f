"""CPU-seconds and memory of `--from-file`'s exact de-duplication (imsim.sources.paths.Seen) over N distinct paths.

python benchmarks/seen.py --paths 1000000
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imsim.sources.paths import Seen  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", type=int, default=1_000_000)
    args = parser.parse_args()
    paths = [f"/corpus/d{i % 1000}/{i:07d}.jpg" for i in range(args.paths)]
    started = time.process_time()
    seen = Seen()
    new = sum(seen.first(p) for p in paths)
    again = sum(seen.first(p) for p in paths[: args.paths // 10])
    cpu = time.process_time() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{args.paths:,} paths: {new:,} first seen, {again} of {args.paths // 10:,} repeats let through | "
        f"{cpu:.2f} CPU-s | peak RSS {peak:.0f} MB (the list itself included)"
    )


if __name__ == "__main__":
    main()
