"""``python -m pipeline demo --out DIR``: what the audit is for, offline, in a few minutes.

Makes a seeded set of shortcut scenes (demo.scenes: objects on natural photo crops, 96 px)
in which three classes carry a shortcut (a moving semi-transparent logo, a fixed corner
text stamp, a thin frame) and two are clean, with each object's box; trains the small
ReLU6 / swish CNN on them (demo.train); writes DIR/data/ (images, annotations.jsonl, the
model, its class names) and returns the ``--set`` overrides that point configs/demo.yaml
at them. The job then runs as any other: maps, records, the audit with its flags, their
causal tests and the report (DIR/audit/report.html).
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from pipeline.demo.scenes import SHAPES, Plant, make_scenes
from pipeline.demo.train import train

SIZE = 96
CLASSES = 5
PER_CLASS = 200
PLANTS = (Plant("tag", 0, "logo"), Plant("stamp", 1, "text"), Plant("frame", 2))
DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def prepare(out_dir: str, *, seed: int = 0, per_class: int = PER_CLASS) -> list[str]:
    """Write DIR/data (see the module docstring); returns the config overrides."""
    if per_class < 20:
        raise ValueError(f"demo --per-class: got {per_class}; at least 20 (the audit's rules "
                         "need dozens of members per class; 200 is the default).")  # fmt: skip
    data = Path(out_dir) / "data"
    images = data / "images"
    images.mkdir(parents=True, exist_ok=True)
    scenes = make_scenes(seed, size=SIZE, classes=CLASSES, per_class=per_class, plants=PLANTS)
    names = [SHAPES[c] for c in range(CLASSES)]
    rows = []
    for i, (pixels, label, box) in enumerate(zip(scenes.images, scenes.labels, scenes.boxes)):
        key = f"{names[label]}_{i:04d}.png"
        Image.fromarray(pixels).save(images / key)
        y0, x0, y1, x1 = (int(v) for v in box)
        rows.append(json.dumps({"key": key, "boxes": [[y0, x0, y1, x1]], "label": int(label)}))
    (data / "annotations.jsonl").write_text("\n".join(rows) + "\n")
    (data / "classes.txt").write_text("\n".join(names) + "\n")
    (data / "planted.json").write_text(json.dumps({
        "plants": [{"kind": p.kind, "class": names[p.cls], "design": p.design}
                   for p in PLANTS],
        "planted": {names[p.cls]: [f"{names[p.cls]}_{i:04d}.png"
                                   for i in scenes.planted[j].nonzero()[0]]
                    for j, p in enumerate(PLANTS)},
    }, indent=1))  # fmt: skip
    model = train(scenes.images, scenes.labels, seed=seed)
    model.save(data / "demo_cnn.keras")
    return [f"model.name={data / 'demo_cnn.keras'}", f"model.class_names={data / 'classes.txt'}",
            f"source.pattern={images}/*.png", f"output.dir={out_dir}",
            f"audit.annotations={data / 'annotations.jsonl'}"]  # fmt: skip
