"""The audit's costs: its extra time over the same job without it, its memory against the
dataset size, and SpRAy on 10,000 maps of one class.

    python -m benchmarks.audit_bench [--images 96 384] [--rounds 2] [--model mobilenetv2]

1. Overhead: the default job (configs/local.yaml: the shipped CNN, vanilla + guided +
   SmoothGrad-50, 64 x 64) over copies of the bundled images (their boxes in a sidecar)
   at two ``--images`` sizes, `python -m pipeline run` with audit.enabled false and true,
   interleaved, each a fresh process (what a user waits for: the run, the curves in the
   handler, the audit pipeline, the sanity check). Reported: the median wall times and
   their ratio at each size, and the per-image (marginal) ratio between the sizes.
2. Memory: the per-class accumulator (ClassAggregate, reservoir 512) after 1,000, 10,000
   and 40,000 rows (pickled bytes), and the peak RSS of `python -m pipeline audit` over
   two output dirs, one 4x the other.
3. SpRAy: strategies.discover on 10,000 synthetic 16 x 16 maps of one class (the sparse
   path), median of 3.
"""

import argparse
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import common
from pipeline.config import AuditConfig

WORK = common.ROOT / ".bench" / "audit"
IMAGES = common.ROOT / "examples" / "images"


def _dataset(root: Path, copies: int) -> tuple[Path, Path]:
    """``copies`` x the bundled images under new names, and their boxes' sidecar."""
    images = root / "images"
    shutil.rmtree(images, ignore_errors=True)
    images.mkdir(parents=True)
    rows = [json.loads(line) for line in (IMAGES / "annotations.jsonl").read_text().splitlines()]
    out = []
    for i in range(copies):
        for row in rows:
            key = f"{i:03d}_{row['key']}"
            shutil.copyfile(IMAGES / row["key"], images / key)
            out.append(json.dumps({**row, "key": key}))
    sidecar = root / "annotations.jsonl"
    sidecar.write_text("\n".join(out) + "\n")
    return images, sidecar


def _wait(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one child process."""
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=common.ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=False)  # fmt: skip
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"{command} failed: {child.stderr.read()[-2000:]!r}")
    return wall, usage.ru_maxrss / 1024.0


FRACTION = AuditConfig().faithfulness_fraction
MODEL_SETTINGS: list[str] = []  # --set overrides for the model under test (main() fills it)


def mobilenet_settings() -> list[str]:
    """MobileNetV2 at 224, random weights with calibrated BatchNorm, saved under .bench/."""
    import keras

    path = WORK / "mobilenetv2.keras"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        keras.utils.set_random_seed(0)
        model = common.random_weight_model("MobileNetV2", 224)
        x = np.random.default_rng(0).uniform(-1, 1, (16, 224, 224, 3)).astype(np.float32)
        common.calibrate_batchnorm(model, x)
        model.save(path)
    return [f"model.name={path}", "model.preprocessing=symmetric", "batch.max_batch_size=16",
            "saliency.sample_batch_size=64", "model.class_names=[]"]  # fmt: skip


def _run(images: Path, sidecar: Path, out: Path, audit: bool, methods: str = "") -> list[str]:
    command = [sys.executable, "-m", "pipeline", "run", "--config", "configs/local.yaml",
               "--set", f"source.pattern={images}/*", "--set", f"output.dir={out}",
               "--set", f"audit.enabled={'true' if audit else 'false'}",
               "--set", f"audit.annotations={sidecar}",
               # the code's default: configs/local.yaml asks for all 12 bundled images
               "--set", f"audit.faithfulness_fraction={FRACTION}", "-q"]  # fmt: skip
    for setting in MODEL_SETTINGS:
        command += ["--set", setting]
    if methods:
        command += ["--set", f"saliency.methods={methods}"]
    return command


def overhead(sizes: list[int], rounds: int) -> dict:
    """Wall time of the job, audit off / on, at each size; and the per-image (marginal)
    cost between the two sizes, which is what a large dataset pays (the sanity check and
    the audit pipeline's start are fixed costs)."""
    out = {}
    for images in sizes:
        copies = max(1, images // 12)
        folder, sidecar = _dataset(WORK / f"overhead-{images}", copies)
        times: dict[str, list[float]] = {"off": [], "on": []}
        for _ in range(rounds):
            for name in ("off", "on"):
                target = WORK / f"overhead-{images}" / f"out-{name}"
                shutil.rmtree(target, ignore_errors=True)
                wall, _ = _wait(_run(folder, sidecar, target, audit=name == "on"))
                times[name].append(wall)
                print(f"  {copies * 12} images, audit {name}: {wall:.1f} s", file=sys.stderr)
        off, on = statistics.median(times["off"]), statistics.median(times["on"])
        out[str(copies * 12)] = {"seconds": times, "off_s": off, "on_s": on, "ratio": on / off}
    sizes_run = sorted(int(k) for k in out)
    small, large = out[str(sizes_run[0])], out[str(sizes_run[-1])]
    extra = sizes_run[-1] - sizes_run[0]
    marginal = {name: (large[f"{name}_s"] - small[f"{name}_s"]) / extra for name in ("off", "on")}
    out["marginal_s_per_image"] = marginal
    out["marginal_ratio"] = marginal["on"] / marginal["off"]
    # What the audit adds whatever the size (sanity check, the audit pipeline's start).
    out["fixed_s"] = (small["on_s"] - small["off_s"]) - (marginal["on"] - marginal["off"]) * (
        sizes_run[0]
    )
    return out


def memory() -> dict:
    from pipeline.audit.dataset.aggregates import ClassAggregate

    rng = np.random.default_rng(0)
    sizes = {}
    aggregate = ClassAggregate(reservoir=512)
    metrics = {"gini": 0.5, "energy_in_box": 0.4, "deletion_auc": 3.0}
    for n in range(1, 40_001):
        aggregate.add(f"k{n}", metrics=metrics, small_map=rng.uniform(size=(16, 16)),
                      confidence=0.9, correct=True,
                      curves={"deletion": np.ones(11), "insertion": np.ones(11)})  # fmt: skip
        if n in (1_000, 10_000, 40_000):
            sizes[n] = len(pickle.dumps(aggregate))
    folder, sidecar = _dataset(WORK / "memory", 32)  # 384 images
    small_dir = WORK / "memory" / "small"
    shutil.rmtree(small_dir, ignore_errors=True)
    small_dir.mkdir(parents=True)
    for path in sorted(folder.iterdir())[:96]:
        shutil.copyfile(path, small_dir / path.name)
    rss = {}
    for name, images in (("96", small_dir), ("384", folder)):
        out = WORK / "memory" / f"out-{name}"
        shutil.rmtree(out, ignore_errors=True)
        _wait(_run(images, sidecar, out, audit=False, methods="[vanilla]"))
        audit = [sys.executable, "-m", "pipeline", "audit", "--config", "configs/local.yaml",
                 "--set", f"output.dir={out}", "--set", f"audit.annotations={sidecar}",
                 "--set", "saliency.methods=[vanilla]"]  # fmt: skip
        wall, peak = _wait(audit)
        rss[name] = {"seconds": wall, "peak_rss_mib": peak}
        print(f"  audit over {name} records: {wall:.1f} s, {peak:.0f} MiB", file=sys.stderr)
    return {"accumulator_bytes": sizes, "audit_process": rss}


def spray(n: int = 10_000) -> dict:
    from pipeline.audit.dataset.strategies import discover
    from pipeline.testing.audit_data import synthetic_class

    _, maps, planted = synthetic_class(2, shortcut=0.3, n=n)
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        found = discover(maps)
        seconds.append(time.perf_counter() - start)
    recovered = bool(((found.labels == 1) == planted).all())
    return {"maps": n, "seconds": seconds, "median_s": statistics.median(seconds),
            "k": found.k, "planted_recovered_exactly": recovered}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, nargs=2, default=[96, 384])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--model",
        choices=("shapes", "mobilenetv2"),
        default="shapes",
        help="the shipped 64x64 CNN, or MobileNetV2 at 224 (random weights)",
    )
    parser.add_argument("--only-overhead", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.model == "mobilenetv2":
        MODEL_SETTINGS.extend(mobilenet_settings())
    out = {"machine": common.machine(), "model": args.model}
    if not args.only_overhead:
        out.update(spray=spray(), memory=memory())
    out["overhead"] = overhead(sorted(args.images), args.rounds)
    o = out["overhead"]
    rows = [
        [
            f"job, {n} images, audit off / on",
            f"{o[n]['off_s']:.1f} s / {o[n]['on_s']:.1f} s",
            f"{o[n]['ratio']:.2f}x",
            "<= 1.25x",
        ]
        for n in sorted((k for k in o if k.isdigit()), key=int)
    ] + [
        [
            "per extra image, audit off / on",
            " / ".join(f"{o['marginal_s_per_image'][k] * 1000:.0f} ms" for k in ("off", "on")),
            f"{o['marginal_ratio']:.2f}x (fixed: {o['fixed_s']:.1f} s)",
            "<= 1.25x",
        ],
    ]
    if not args.only_overhead:
        m, s = out["memory"], out["spray"]
        rows += [
        ["accumulator after 1k / 10k / 40k rows",
         " / ".join(f"{v / 1024:.0f} KiB" for v in m["accumulator_bytes"].values()), "", "flat"],
        ["`audit` peak RSS, 96 / 384 records",
         " / ".join(f"{v['peak_rss_mib']:.0f} MiB" for v in m["audit_process"].values()), "",
         "flat"],
        [f"SpRAy, {s['maps']:,} maps of one class", f"{s['median_s']:.1f} s",
         f"k={s['k']}, mark recovered: {s['planted_recovered_exactly']}", "<= 30 s"],
        ]  # fmt: skip
    print(common.markdown_table(["", "measured", "", "target"], rows))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
