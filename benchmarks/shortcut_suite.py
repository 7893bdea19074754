"""The realistic shortcut suite (issue 27): per seed, a small ReLU6 / swish CNN trained on
objects pasted on natural photo crops (pipeline.demo.scenes) with four shortcuts planted in
four classes (a moving semi-transparent tag, a fixed corner stamp, a thin frame, a shared
background; the marks' designs rotate with the seed) and two clean classes, and the same
family trained with nothing planted (a clean model). Each is audited in this process as the
job audits it (pipeline.demo.suite) with vanilla and SmoothGrad maps, every flag tested
causally with the object boxes.

Reported per shortcut kind and method: how often a confirmed flag finds it, the members'
precision and recall; per clean class (of planted and of clean models): confirmed and
unconfirmed flags.

    python -m benchmarks.shortcut_suite --size 96 --seeds 0 1 2 [--clean-seeds 10 11 12]
        [--per-class 250] [--samples 50] [--json benchmarks/results/DATE-suite.json]
"""

from __future__ import annotations

import argparse
import collections
import time

import numpy as np

from benchmarks import common
from pipeline.demo.scenes import DESIGNS, Plant, load_photos, make_scenes
from pipeline.demo.suite import audit_suite
from pipeline.demo.train import train

CLASSES = 6
METHODS = ("vanilla", "smoothgrad")


def plants(seed: int) -> tuple[Plant, ...]:
    """The seed's four shortcuts in classes 0-3 (classes 4 and 5 stay clean)."""
    return (
        Plant("tag", 0, DESIGNS[seed % 3]),
        Plant("stamp", 1, DESIGNS[(seed + 1) % 3]),
        Plant("frame", 2),
        Plant("background", 3),
    )


def run_seed(seed: int, *, size: int, per_class: int, samples: int, clean: bool, photos) -> list:
    planted = () if clean else plants(seed)
    started = time.perf_counter()
    scenes = make_scenes(seed, size=size, classes=CLASSES, per_class=per_class, plants=planted,
                         photos=photos)  # fmt: skip
    model = train(scenes.images, scenes.labels, seed=seed)
    trained = time.perf_counter()
    outcomes = audit_suite(model, scenes, METHODS, samples=samples, seed=seed)
    kind = "clean" if clean else "planted"
    audited = time.perf_counter() - trained
    common.log(f"seed {seed} ({kind}, {size} px): trained in {trained - started:.0f} s, "
               f"audited in {audited:.0f} s")  # fmt: skip
    rows = []
    for o in outcomes:
        rows.append({
            "seed": seed, "model": "clean" if clean else "planted", "class": o.cls,
            "method": o.method, "plant": o.plant, "planted": o.planted,
            "confirmed": o.confirmed, "flags": len(o.flags),
            "precision": o.precision, "recall": o.recall,
            "kinds": [[f["kind"], len(f["members"]), f.get("confirmation", {}).get("verdict")]
                      for f in o.flags],
        })  # fmt: skip
        common.log(
            f"  class {o.cls} {o.method:10s} {o.plant:12s} planted {o.planted:3d} flags "
            f"{len(o.flags)} confirmed {o.confirmed} P {o.precision} R {o.recall}"
        )
        for kind, size, verdict in rows[-1]["kinds"]:
            common.log(f"      {kind} ({size} members): {verdict}")
    return rows


def summary(rows: list[dict]) -> list[list]:
    """[kind, method, models, found (confirmed, P and R >= 0.8), median P, median R]; clean
    rows: [clean, method, classes, classes with a confirmed flag, unconfirmed flags]."""
    table = []
    groups = collections.defaultdict(list)
    for r in rows:
        groups[(r["plant"], r["method"])].append(r)
    for (plant, method), rs in sorted(groups.items()):
        if plant == "clean":
            table.append([plant, method, len(rs), sum(r["confirmed"] > 0 for r in rs),
                          sum(r["flags"] - r["confirmed"] for r in rs)])  # fmt: skip
            continue
        good = [r for r in rs if r["precision"] is not None and r["recall"] is not None
                and r["precision"] >= 0.8 and r["recall"] >= 0.8]  # fmt: skip
        p = [r["precision"] for r in rs if r["precision"] is not None]
        q = [r["recall"] for r in rs if r["recall"] is not None]
        table.append([plant, method, len(rs), len(good),
                      round(float(np.median(p)), 2) if p else None,
                      round(float(np.median(q)), 2) if q else None])  # fmt: skip
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--clean-seeds", type=int, nargs="*", default=[])
    parser.add_argument("--per-class", type=int, default=250)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    photos = load_photos()
    rows = []
    for seed in args.seeds:
        rows += run_seed(seed, size=args.size, per_class=args.per_class, samples=args.samples,
                         clean=False, photos=photos)  # fmt: skip
    for seed in args.clean_seeds:
        rows += run_seed(seed, size=args.size, per_class=args.per_class, samples=args.samples,
                         clean=True, photos=photos)  # fmt: skip
    table = summary(rows)
    print(common.markdown_table(["plant", "method", "n", "found / flagged", "P", "R"], table))
    common.dump_json({"machine": common.machine(), "args": vars(args), "rows": rows,
                      "summary": table}, args.json)  # fmt: skip


if __name__ == "__main__":
    main()
