"""Simonyan's weak box on natural scenes: this tree's segmentation against another commit's.

Per (size, seed): the demo's shortcut-free scenes (pipeline.demo.scenes: an object of one
of five classes anywhere, corners included, on a crop of a real photo), the demo CNN
(ReLU6 / swish) trained on one seed's scenes, and 60 held-out scenes of another seed;
their vanilla and SmoothGrad-20 maps of the predicted class. Each side's
``weak_box_metrics`` against the object's box: mean box IoU, box accuracy (IoU >= 0.5)
and milliseconds per map. The other side's module is read from git (``--base``), so the
same maps go through both.

    python -m benchmarks.weak_box_bench [--base 0d94734] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import common
from pipeline.audit.metrics import weak_box
from pipeline.audit.metrics.relevance import relevance
from pipeline.demo.scenes import make_scenes
from pipeline.demo.train import train
from pipeline.engine.explainer import Explainer

CASES = ((96, 0), (96, 1), (96, 2), (224, 0), (224, 1))
CLASSES = 5
HELD_OUT = 12  # per class
METHODS = ("vanilla", "smoothgrad")
MODULE = "pipeline/audit/metrics/weak_box.py"


def base_module(commit: str):
    """The weak_box module as it was at ``commit``, imported under another name."""
    source = subprocess.run(["git", "show", f"{commit}:{MODULE}"], cwd=common.ROOT,
                            check=True, capture_output=True, text=True).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp()) / "weak_box_base.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("weak_box_base", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def maps_of(size: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, list], float]:
    """(held-out images, their boxes, {method: maps}, the model's held-out accuracy)."""
    per_class = 200 if size < 128 else 120
    scenes = make_scenes(seed, size=size, classes=CLASSES, per_class=per_class)
    model = train(scenes.images, scenes.labels, seed=seed, epochs=20 if size < 128 else 15)
    held = make_scenes(seed + 1000, size=size, classes=CLASSES, per_class=HELD_OUT)
    x = held.images.astype(np.float32) / 255.0
    explainer = Explainer(model, precision="float32", samples=20, pad_to=64)
    predicted = np.argmax(explainer.logits(x), axis=1)
    maps = {m: [relevance(g.astype(np.float16))
                for g in explainer.explain(x, m, targets=predicted).gradients]
            for m in METHODS}  # fmt: skip
    return held.images, held.boxes, maps, float(np.mean(predicted == held.labels))


def score(module, images, boxes, maps) -> dict[str, float]:
    """Mean box IoU, box accuracy and ms per map of one side's weak_box_metrics."""
    start = time.perf_counter()
    rows = [module.weak_box_metrics(m, image, [tuple(box)])
            for m, image, box in zip(maps, images, boxes)]  # fmt: skip
    ms = (time.perf_counter() - start) * 1000 / len(rows)
    return {"box_iou": float(np.mean([r["box_iou"] for r in rows])),
            "box_correct": float(np.mean([r["box_correct"] for r in rows])), "ms": ms}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="0d94734")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    sides = {"base": base_module(args.base), "new": weak_box}
    results, rows = [], []
    for size, seed in CASES:
        images, boxes, maps, accuracy = maps_of(size, seed)
        for method in METHODS:
            got = {side: score(module, images, boxes, maps[method])
                   for side, module in sides.items()}  # fmt: skip
            results.append({"size": size, "seed": seed, "method": method,
                            "accuracy": accuracy, **got})  # fmt: skip
            rows.append([size, seed, method, f"{accuracy:.2f}",
                         *(f"{got[s]['box_iou']:.3f}" for s in sides),
                         *(f"{got[s]['box_correct']:.2f}" for s in sides),
                         *(f"{got[s]['ms']:.1f}" for s in sides)])  # fmt: skip
            common.log(f"{size} px seed {seed} {method}: IoU {got['base']['box_iou']:.3f} -> "
                       f"{got['new']['box_iou']:.3f}")  # fmt: skip
    print(common.markdown_table(
        ["px", "seed", "method", "model acc.", "IoU base", "IoU new", "correct base",
         "correct new", "ms base", "ms new"], rows))  # fmt: skip
    common.dump_json({"machine": common.machine(), "base": args.base, "results": results},
                     args.json)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
