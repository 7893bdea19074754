"""Record bytes per image: MobileNetV2 at 224 x 224, vanilla + guided + SmoothGrad-50, the
bundled photos, each record as the job writes it (the image included, gradients `compact`),
against the same record with TensorProto gradients (`output.gradient_encoding: tensor`) and
with TensorProto gradients plus its three float32 views (how records were written before
2026-12-04). Also the encode and parse time per record of each encoding.

    python -m benchmarks.record_bytes [--images 6] [--json out.json]

Random weights with BatchNorm calibrated on the photos (realistic gradient ranges; float16
gradients' bytes do not depend on their values, the PNG of the image does).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import tensorflow as tf

from benchmarks import common
from pipeline.elements import SaliencyRecord
from pipeline.engine.explainer import Explainer
from pipeline.maps.views import compute_views
from pipeline.store import records

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
    lean_sizes, tensor_sizes, old_sizes = [], [], []
    seconds = {"compact": {"encode": [], "parse": []}, "tensor": {"encode": [], "parse": []}}
    for i in range(args.images):
        record = SaliencyRecord(
            key=f"photo_{i}.png", source="bench", label=-1, sha256="0" * 64, pixels=pixels[i],
            prediction_class=int(targets[i]), prediction_probability=0.5,
            top_k_classes=tuple(range(5)), top_k_probabilities=(0.2,) * 5,
            target_class=int(targets[i]), target_rank=0, target_score=1.0,
            gradients={m: maps[m][i].astype(np.float16) for m in METHODS},
            run_id="bench", model_name="MobileNetV2", model_fingerprint="0" * 64,
        )  # fmt: skip
        encoded = {}
        for encoding, times in seconds.items():
            start = time.perf_counter()
            encoded[encoding] = records.encode(record, gradient_encoding=encoding)
            times["encode"].append(time.perf_counter() - start)
            start = time.perf_counter()
            records.parse(encoded[encoding])
            times["parse"].append(time.perf_counter() - start)
        lean_sizes.append(len(encoded["compact"]))
        tensor_sizes.append(len(encoded["tensor"]))
        old_sizes.append(len(_with_views(encoded["tensor"], record)))
    mean = statistics.mean
    result = {
        "lean_bytes_per_image": mean(lean_sizes),
        "tensor_bytes_per_image": mean(tensor_sizes),
        "with_views_bytes_per_image": mean(old_sizes),
        "ratio": mean(lean_sizes) / mean(old_sizes),
        "tensor_ratio": mean(tensor_sizes) / mean(old_sizes),
        "ms_per_record": {
            e: {k: 1e3 * statistics.median(v) for k, v in t.items()} for e, t in seconds.items()
        },  # fmt: skip
        "lean": lean_sizes,
        "tensor": tensor_sizes,
        "with_views": old_sizes,
    }
    lean, old = result["lean_bytes_per_image"] / 1e6, result["with_views_bytes_per_image"] / 1e6
    common.log(
        f"compact {lean:.3f} MB, tensor {result['tensor_bytes_per_image'] / 1e6:.3f} MB, "
        f"with views {old:.3f} MB: {result['ratio']:.3f} ({result['tensor_ratio']:.3f}); "
        f"ms per record {result['ms_per_record']}"
    )
    common.dump_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
