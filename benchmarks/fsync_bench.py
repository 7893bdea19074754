"""What ``output.fsync`` costs: the same local job with it on and off, interleaved.

    python -m benchmarks.fsync_bench [--images 300] [--repeats 3]

The job: ``--images`` distinct 24x24 PNGs through the tiny reliability model (vanilla,
float32, heatmap + grid PNGs, 2 shards), in this process, each run into a fresh output dir.
Timed: the whole run() and its publish step alone (where every fsync is). Ratio = fsync on /
off per round, median. Run alone: on 2 cores anything else heavy voids the figure.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from pipeline.beam import run as run_module
from pipeline.config.files import load_config
from pipeline.testing.reliability import base_overrides, noise_png, save_tiny_model, write_files

ROOT = Path(__file__).resolve().parents[1]


def _timed_publish(spent: list[float]):
    real = run_module.publish

    def publish(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)

    return publish


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="fsync-bench-"))
    model = save_tiny_model(str(work / "tiny.keras"))
    write_files(str(work / "in"), {f"{i:05d}.png": noise_png(i) for i in range(args.images)})
    spent: list[float] = []
    run_module.publish = _timed_publish(spent)
    totals: dict[bool, list[float]] = {True: [], False: []}
    publishes: dict[bool, list[float]] = {True: [], False: []}
    for round_ in range(args.repeats + 1):  # round 0 warms TF and the file cache
        for fsync in (False, True):
            out = work / f"out-{round_}-{fsync}"
            config = load_config(
                None,
                [
                    *base_overrides(model, f"{work}/in/*", str(out)),
                    "output.views=[heatmap, grid]",
                    "output.num_shards=2",
                    f"output.fsync={str(fsync).lower()}",
                ],
            )
            start = time.perf_counter()
            run_module.run(config)
            if round_:
                totals[fsync].append(time.perf_counter() - start)
                publishes[fsync].append(spent[-1])
    ratio = statistics.median(a / b for a, b in zip(totals[True], totals[False]))
    print(f"{args.images} images, {args.repeats} rounds (median)")
    for fsync in (False, True):
        print(
            f"  fsync {'on ' if fsync else 'off'}: run {statistics.median(totals[fsync]):.2f} s, "
            f"publish {statistics.median(publishes[fsync]) * 1000:.0f} ms"
        )
    print(f"  run time ratio on/off: {ratio:.3f}")


if __name__ == "__main__":
    main()
