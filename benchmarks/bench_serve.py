"""Veil Serve against in-process ONNX Runtime on the CPU, in one run (same slices).

A preset of :mod:`benchmarks.bench_gpu`: both modes, batch sizes 1 and 8, device
``cpu``, one intra-op thread per session; the ratio column compares every row with
in-process batch 1 of the same run.

Run ``python -m benchmarks.bench_serve [--count 16]`` (other options: see bench_gpu).
"""

from __future__ import annotations

import sys

from benchmarks import bench_gpu

__all__ = ["main"]

DEFAULTS = ["--modes", "inprocess,serve", "--batch-sizes", "1,8", "--device", "cpu",
            "--threads", "1", "--count", "16"]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: bench_gpu with this preset (options given here win)."""
    given = list(sys.argv[1:] if argv is None else argv)
    preset: list[str] = []
    for option, value in zip(DEFAULTS[::2], DEFAULTS[1::2], strict=True):
        if option not in given:
            preset += [option, value]
    return bench_gpu.main(preset + given)


if __name__ == "__main__":
    sys.exit(main())
