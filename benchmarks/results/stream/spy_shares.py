"""Shares of the samples of a ``py-spy record --format raw`` file, per function (inclusive),
among the samples whose stack holds ``--within`` (default: the stream's batch worker).

    py-spy record --pid <server> -r 200 -d 20 -f raw -o server.txt   # during a bench_stream step
    python benchmarks/results/stream/spy_shares.py server.txt --top 40

py-spy is not a project dependency (``pip install py-spy``); idle threads' samples (sleeps,
waits) are in the file too, so compare shares within one thread's stack.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path)
    parser.add_argument("--within", default="_apply_batch")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    inclusive: Counter[str] = Counter()
    total = everything = 0
    for line in args.raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        everything += int(count)
        if not any(args.within in f for f in frames):
            continue
        total += int(count)
        for name in {re.sub(r":\d+\)$", ")", f) for f in frames}:
            inclusive[name] += int(count)
    print(f"{total} of {everything} samples hold {args.within!r}")
    for name, n in inclusive.most_common(args.top):
        print(f"{n / max(total, 1):6.1%} {name}")


if __name__ == "__main__":
    main()
