"""Record bytes per image: MobileNetV2 at 224 x 224, vanilla + guided + SmoothGrad-50, the
bundled photos, each record as the job writes it (the image included), against the same
record with its three float32 views stored as well (how records were written before
2026-12-04).

    python -m benchmarks.record_bytes [--images 6] [--json out.json]

Random weights with BatchNorm calibrated on the photos (realistic gradient ranges; float16
gradients' bytes do not depend on their values, the PNG of the image does).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import common  # noqa: E402
from pipeline.elements import SaliencyRecord  # noqa: E402
from pipeline.engine.explainer import Explainer  # noqa: E402
from pipeline.maps.views import compute_views  # noqa: E402
from pipeline.store import records  # noqa: E402

METHODS = ("vanilla", "guided", "smoothgrad")


def _with_views(lean: bytes, record: SaliencyRecord) -> bytes:
    """The record as it was written before: its views stored too."""
    example = tf.train.Example.FromString(lean)
    for method, g in record.gradients.items():
        views = compute_views(g, views=records.RECORD_VIEWS)
        for view, m in views.items():
            key = records.method_keys(method)[view]
            example.features.feature[key].bytes_list.value.append(records.serialize_array(m))
    return example.SerializeToString(deterministic=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--json", default="-")
    args = parser.parse_args(argv)
    model = common.random_weight_model("MobileNetV2")
    common.calibrate_batchnorm(model, common.symmetric(common.photo_batch(16)))
    pixels = common.photo_batch(args.images)
    x = common.symmetric(pixels)
    explainer = Explainer(model)
    targets = np.argmax(explainer.logits(x), axis=1)
    maps = {m: explainer.explain(x, m, targets=targets).gradients for m in METHODS}
    lean_sizes, old_sizes = [], []
    for i in range(args.images):
        record = SaliencyRecord(
            key=f"photo_{i}.png", source="bench", label=-1, sha256="0" * 64, pixels=pixels[i],
            prediction_class=int(targets[i]), prediction_probability=0.5,
            top_k_classes=tuple(range(5)), top_k_probabilities=(0.2,) * 5,
            target_class=int(targets[i]), target_rank=0, target_score=1.0,
            gradients={m: maps[m][i].astype(np.float16) for m in METHODS},
            run_id="bench", model_name="MobileNetV2", model_fingerprint="0" * 64,
        )  # fmt: skip
        lean = records.encode(record)
        lean_sizes.append(len(lean))
        old_sizes.append(len(_with_views(lean, record)))
    result = {
        "lean_bytes_per_image": statistics.mean(lean_sizes),
        "with_views_bytes_per_image": statistics.mean(old_sizes),
        "ratio": statistics.mean(lean_sizes) / statistics.mean(old_sizes),
        "lean": lean_sizes,
        "with_views": old_sizes,
    }
    lean, old = result["lean_bytes_per_image"] / 1e6, result["with_views_bytes_per_image"] / 1e6
    common.log(f"{lean:.3f} MB vs {old:.3f} MB: {result['ratio']:.3f}")
    common.dump_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
