"""A nightly incremental audit: what adding 1% new images costs, with the audit's per-record
work on the workers (row lines) against the baseline that re-measures every record.

    python -m benchmarks.incremental_audit_bench [--images 1000] [--new 10] [--rounds 2]
        [--baseline-src /path/to/checkout/of/the/old/commit]

Workload (issue 18): ``--images`` distinct 224x224 PNGs (noise with one bright square, its
box in the annotations sidecar) through a small CNN (conv 8 / conv 16, stride 2, GAP,
Dense 5; random weights), vanilla + guided, float32, audit on (faithfulness curves on the
default 10% of records), sanity off, incremental. Untimed: the output dir over ``--images``
(and a copy over a quarter of them). Timed, each a fresh ``python -m pipeline run`` (the
run, publish and the audit after it), rounds interleaved:

- incremental: a copy of the big output dir plus ``--new`` new images (incremental run);
- fresh: a new output dir over just the ``--new`` images.

Ratio incremental / fresh (target <= 1.5). Audit only: ``python -m pipeline audit`` on the
big and the quarter dir; per record = the difference over the difference in records (the
fixed start cancels). With ``--baseline-src`` every timed command also runs with
PYTHONPATH at that checkout (the code before the audit moved to the workers), on copies of
the same dirs, in the same rounds. Run alone: on 2 cores anything else voids the figures.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import common

WORK = common.ROOT / ".bench" / "incremental"
SIZE = 224


def _image(i: int) -> tuple[bytes, list[int]]:
    rng = np.random.default_rng(i)
    pixels = rng.integers(0, 90, (SIZE, SIZE, 3), dtype=np.uint8)
    y, x = (int(v) for v in rng.integers(0, SIZE - 48, 2))
    pixels[y : y + 48, x : x + 48] = rng.integers(150, 256, 3, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue(), [y, x, y + 48, x + 48]


def _images(folder: Path, ids: range, sidecar: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with sidecar.open("a", encoding="utf-8") as rows:
        for i in ids:
            data, box = _image(i)
            (folder / f"{i:05d}.png").write_bytes(data)
            rows.write(json.dumps({"key": f"{i:05d}.png", "boxes": [box]}) + "\n")


def _model(path: Path) -> None:
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, keras.layers.Dense(5)(x)).save(path)


def _command(verb: str, images: Path, out: Path, sidecar: Path, model: Path) -> list[str]:
    sets = [f"model.name={model}", "model.preprocessing=unit", f"source.pattern={images}/*",
            "saliency.methods=[vanilla, guided]", "saliency.precision=float32",
            "batch.max_batch_size=16", f"output.dir={out}", "output.views=[heatmap]",
            "run.incremental=true", "run.progress_every=0", "audit.enabled=true",
            "audit.sanity_samples=0", f"audit.annotations={sidecar}"]  # fmt: skip
    return [sys.executable, "-m", "pipeline", verb, "-q", *[a for s in sets for a in ("--set", s)]]


def _timed(command: list[str], src: str | None) -> float:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if src:
        env["PYTHONPATH"] = src
    start = time.perf_counter()
    done = subprocess.run(command, cwd=src or common.ROOT, env=env, capture_output=True,
                          text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{command[3]} failed ({src or 'ours'}): {done.stderr[-2000:]}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--new", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline-src", default="")
    parser.add_argument("--json", default="-")
    args = parser.parse_args(argv)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    model, sidecar = WORK / "small_cnn.keras", WORK / "boxes.jsonl"
    _model(model)
    quarter = args.images // 4
    _images(WORK / "big", range(args.images), sidecar)
    _images(WORK / "quarter", range(quarter), Path(os.devnull))
    _images(WORK / "new", range(args.images, args.images + args.new), sidecar)
    sides = {"ours": None, **({"baseline": args.baseline_src} if args.baseline_src else {})}
    for name, src in sides.items():  # the dirs each side audits, built by that side
        for data in ("big", "quarter"):
            common.log(f"building {name}/{data}")
            _timed(_command("run", WORK / data, WORK / f"{name}-{data}", sidecar, model), src)
    times: dict[str, dict[str, list[float]]] = {n: {} for n in sides}
    for round_ in range(args.rounds):
        for name, src in sides.items():
            grown = WORK / f"{name}-grown"
            shutil.rmtree(grown, ignore_errors=True)
            shutil.copytree(WORK / f"{name}-big", grown)
            both = WORK / "grown-input"
            shutil.rmtree(both, ignore_errors=True)
            shutil.copytree(WORK / "big", both)
            for path in (WORK / "new").iterdir():
                shutil.copy(path, both / path.name)
            fresh = WORK / f"{name}-fresh"
            shutil.rmtree(fresh, ignore_errors=True)
            runs = {
                "incremental": _command("run", both, grown, sidecar, model),
                "fresh": _command("run", WORK / "new", fresh, sidecar, model),
                "audit_big": _command("audit", WORK / "big", WORK / f"{name}-big", sidecar, model),
                "audit_quarter": _command(
                    "audit", WORK / "quarter", WORK / f"{name}-quarter", sidecar, model
                ),  # fmt: skip
            }
            for what, command in runs.items():
                seconds = _timed(command, src)
                times[name].setdefault(what, []).append(seconds)
                common.log(f"round {round_} {name} {what}: {seconds:.1f} s")
    result: dict = {"machine": common.machine(), "images": args.images, "new": args.new,
                    "seconds": times}  # fmt: skip
    for name, t in times.items():
        med = {what: statistics.median(v) for what, v in t.items()}
        per_record = (med["audit_big"] - med["audit_quarter"]) / (args.images - quarter)
        result[name] = {"median_s": med, "incremental_vs_fresh": med["incremental"] / med["fresh"],
                        "audit_s_per_record": per_record}  # fmt: skip
    if "baseline" in result:
        result["audit_per_record_ours_vs_baseline"] = (
            result["ours"]["audit_s_per_record"] / result["baseline"]["audit_s_per_record"]
        )
    common.dump_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
