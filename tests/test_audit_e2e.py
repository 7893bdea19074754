"""The audit end to end: the default job with the audit on, its outputs read back and
reconciled with the manifest and the rows (localisation, faithfulness computed in the job,
the sanity check); error groups and mask annotations; boxes read from a TFRecord input;
`audit` over an incremental output dir covers every record."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipeline.audit.record.rows import parse_annotations
from pipeline.store.files import read_jsonl
from pipeline.testing.processes import run_cli

ROOT = Path(__file__).resolve().parents[1]


_cli = run_cli


@pytest.mark.slow
def test_the_default_job_audits_its_records(default_run):
    out = default_run.out
    assert "audit: 12 records, 5 classes" in default_run.stderr
    manifest = read_jsonl(str(out / "manifest.jsonl"))
    audit = json.loads((out / "audit" / "audit.json").read_text())
    rows = read_jsonl(str(out / "audit" / "rows.jsonl"))
    methods = ["guided", "smoothgrad", "vanilla"]
    assert audit["records"] == len(manifest) == 12 and sorted(audit["methods"]) == methods
    assert len(rows) == 12 * 3 and {r["key"] for r in rows} == {m["key"] for m in manifest}
    by_class: dict[str, int] = {}
    for m in manifest:
        by_class[str(m["prediction_class"])] = by_class.get(str(m["prediction_class"]), 0) + 1
    assert {c: v["count"] for c, v in audit["classes"].items()} == by_class
    for entry in audit["classes"].values():
        assert entry["accuracy"] == 1.0  # labels from the sidecar; the model gets all 12
        for part in entry["methods"].values():
            assert (out / part["mean_map"]).is_file()
        for cluster in entry["clusters"]:
            assert (out / cluster["prototype"]).is_file()
    for method in methods:
        loc = audit["methods"][method]["localisation"]
        assert loc["n"] == 12
        mine = [r for r in rows if r["method"] == method]
        assert loc["pointing"] == pytest.approx(sum(r["pointing"] for r in mine) / 12)
        assert loc["box_iou"] == pytest.approx(sum(r["box_iou"] for r in mine) / 12)
        faith = audit["methods"][method]["faithfulness"]
        assert faith["n"] == 12 and faith["steps"] == 10 and len(faith["deletion_curve"]) == 11
        for name in ("deletion_auc", "insertion_auc"):
            assert faith[name] == pytest.approx(sum(r[name] for r in mine) / 12)
        # Removing the most relevant pixels first hurts far more than adding them first.
        assert faith["insertion_auc"] > faith["deletion_auc"] + 5
        sanity = audit["methods"][method]["sanity"]
        assert sanity["images"] == 12 and len(sanity["correlations"]) == 3
        assert sanity["depends_on_weights"] is (method != "guided")  # Adebayo et al.
        assert "Binder" in sanity["caveat"]
    # The shapes model looks at the shapes: guided's maps point into the box on most images.
    assert audit["methods"]["guided"]["localisation"]["pointing"] >= 0.75
    assert audit["methods"]["guided"]["localisation"]["energy_in_box"] > 0.5
    assert audit["methods"]["guided"]["localisation"]["box_correct"] >= 0.5
    # Labels from the sidecar: the true-label table mirrors the classes; no errors.
    assert {k: v["count"] for k, v in audit["labels"].items()} == by_class
    assert audit["errors"] == {}
    # Class names (configs/local.yaml: the shipped names file) in the manifest, the records,
    # the report and the contact sheet: every bundled image is named after its shape.
    assert all(m["prediction_name"] == m["key"].split("_")[0] for m in manifest)
    from pipeline.store import records as store_records

    named = {r.key: r.prediction_name for r in store_records.read(str(out / "records/*"))}
    assert named == {m["key"]: m["prediction_name"] for m in manifest}
    report = (out / "audit" / "report.html").read_text()
    assert ">0 circle</a>" in report and "class 4 star" in report
    assert "class 0 circle" in (out / "index.html").read_text()


@pytest.mark.slow
def test_errors_are_grouped_and_masks_replace_boxes(default_run_copy, tmp_path):
    out = default_run_copy  # the audit rewrites audit/: leave the fixture's
    rows = read_jsonl("examples/images/annotations.jsonl")
    wrong_rows = [rows[0], rows[3]]  # a circle and a cross given a wrong label: two errors
    for row in wrong_rows:
        row["label"] = (row["label"] + 1) % 5
    with_mask = rows[2]  # its box as a mask PNG of the original image's size
    with Image.open(ROOT / "examples/images" / with_mask["key"]) as img:
        width, height = img.size
    mask = np.zeros((height, width), np.uint8)
    ymin, xmin, ymax, xmax = (int(v) for v in with_mask["boxes"][0])
    mask[ymin:ymax, xmin:xmax] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    with_mask.update(mask="mask.png", boxes=[])  # relative to the sidecar's folder
    sidecar = tmp_path / "annotations.jsonl"
    sidecar.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = {(r["key"], r["method"]): r for r in read_jsonl(str(out / "audit/rows.jsonl"))}
    proc = _cli("audit", "--config", "configs/local.yaml", "--set", f"output.dir={out}",
                "--set", f"audit.annotations={sidecar}",
                "--set", "audit.sanity_samples=0")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    audit = json.loads((out / "audit" / "audit.json").read_text())
    wrong = {f"{r['label']}-{(r['label'] - 1) % 5}" for r in wrong_rows}
    assert set(audit["errors"]) == wrong
    for key in wrong:
        entry = audit["errors"][key]
        assert entry["count"] == 1 and f"{entry['label']}-{entry['prediction']}" == key
        assert (out / entry["methods"]["guided"]["mean_map"]).is_file()
    assert audit["methods"]["guided"]["sanity"] is None
    after = {(r["key"], r["method"]): r for r in read_jsonl(str(out / "audit/rows.jsonl"))}
    for method in ("vanilla", "guided", "smoothgrad"):
        a, b = before[(with_mask["key"], method)], after[(with_mask["key"], method)]
        assert "box_iou" not in b  # a mask has no box for the weak-box IoU
        for name in ("pointing", "energy_in_box", "rank_accuracy"):
            assert b[name] == pytest.approx(a[name], abs=0.03)  # the same region, resampled


@pytest.mark.slow
def test_boxes_come_from_a_tfrecord_input_when_there_is_no_sidecar(default_run, tmp_path):
    out = default_run.out
    path = tmp_path / "images.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for row in read_jsonl("examples/images/annotations.jsonl"):
            data = (ROOT / "examples/images" / row["key"]).read_bytes()
            with Image.open(ROOT / "examples/images" / row["key"]) as img:
                width, height = img.size
            ymin, xmin, ymax, xmax = row["boxes"][0]
            floats = {"ymin": ymin / height, "xmin": xmin / width, "ymax": ymax / height,
                      "xmax": xmax / width}  # fmt: skip
            feature = {
                "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
                "image/filename": tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[row["key"].encode()])
                ),
                "image/class/label": tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[row["label"]])
                ),
                **{f"image/object/bbox/{k}": tf.train.Feature(
                    float_list=tf.train.FloatList(value=[v])) for k, v in floats.items()},
            }  # fmt: skip
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())
    tf_out = tmp_path / "out"
    proc = _cli("run", "--config", "configs/local.yaml", "--set", f"output.dir={tf_out}",
                "--set", "source.kind=tfrecord", "--set", f"source.pattern={path}",
                "--set", "source.key_key=image/filename", "--set", "audit.annotations=\"\"",
                "--set", "audit.sanity_samples=0", "-q")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    from_records = json.loads((tf_out / "audit" / "audit.json").read_text())
    from_sidecar = json.loads((out / "audit" / "audit.json").read_text())
    for method in ("vanilla", "guided", "smoothgrad"):
        a = from_records["methods"][method]["localisation"]
        b = from_sidecar["methods"][method]["localisation"]
        assert a["n"] == 12
        for name in ("pointing", "energy_in_box", "rank_accuracy"):
            assert a[name] == pytest.approx(b[name], abs=1e-6)
    assert {k: v["count"] for k, v in from_records["labels"].items()} == {
        k: v["count"] for k, v in from_sidecar["labels"].items()
    }


@pytest.mark.slow
def test_audit_covers_an_incremental_output_dir(tmp_path):
    out = tmp_path / "out"
    common = ["--config", "configs/local.yaml", "--set", f"output.dir={out}",
              "--set", "run.incremental=true", "--set", "audit.enabled=false", "-q"]  # fmt: skip
    assert _cli("run", *common, "--set", "source.limit=5").returncode == 0
    assert _cli("run", *common).returncode == 0  # 7 new, 5 done
    proc = _cli("audit", "--config", "configs/local.yaml", "--set", f"output.dir={out}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("audit: 12 records")
    keys = {r["key"] for r in read_jsonl(str(out / "audit" / "rows.jsonl"))}
    assert keys == {m["key"] for m in read_jsonl(str(out / "manifest.jsonl"))}


def test_annotation_sidecar_errors_name_the_line_and_the_fix():
    good = parse_annotations('{"key": "a.jpg", "boxes": [[0, 1, 10, 12]], "label": 2}\n')
    assert good["a.jpg"].boxes == ((0.0, 1.0, 10.0, 12.0),) and good["a.jpg"].label == 2
    with pytest.raises(ValueError, match="line 2: boxes"):
        parse_annotations('{"key": "a"}\n{"key": "b", "boxes": [[5, 0, 1, 1]]}\n')
    with pytest.raises(ValueError, match="line 1: not JSON"):
        parse_annotations("{nope\n")
    with pytest.raises(ValueError, match="appears twice"):
        parse_annotations('{"key": "a"}\n{"key": "a"}\n')


@pytest.mark.slow
def test_drift_between_two_models_ranks_classes_and_gates(default_run, tmp_path):
    import keras

    from pipeline.audit.causal.sanity import layers_top_down, randomise

    model = keras.saving.load_model(ROOT / "examples/model/shapes_cnn.keras", compile=False)
    # Model B: the same network with its last convolution re-drawn (its decisions drift).
    conv = next(n for n in layers_top_down(model) if "conv" in n)
    randomise(model, conv, np.random.default_rng(0))
    model.save(tmp_path / "other.keras")
    out_b = tmp_path / "b"
    proc = _cli("run", "--config", "configs/local.yaml", "--set", f"output.dir={out_b}",
                "--set", f"model.name={tmp_path / 'other.keras'}",
                "--set", "audit.sanity_samples=0", "-q")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out_a = default_run.out
    same = _cli("drift", str(out_a), str(out_a), "--fail-on", "similarity:-0.01", "--json")
    assert same.returncode == 0, same.stderr
    same_classes = json.loads(same.stdout)["classes"]
    assert all(m["similarity"] == pytest.approx(1.0)
               for c in same_classes for m in c["methods"].values())  # fmt: skip
    drift = _cli("drift", str(out_a), str(out_b), "--fail-on", "similarity:-0.01", "--json")
    assert drift.returncode == 6, drift.stderr
    assert "drift: broken rule similarity:-0.01" in drift.stderr
    report = json.loads(drift.stdout)
    scores = [c["change_score"] for c in report["classes"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.01
    assert report["records"] == {"before": 12, "after": 12, "change": 0, "relative": 0.0}


@pytest.mark.slow
def test_nightly_runs_keep_an_audit_history_and_gate_on_drift(tmp_path):
    out = tmp_path / "out"
    common = ["--config", "configs/local.yaml", "--set", f"output.dir={out}",
              "--set", "run.incremental=true", "--set", "run.audit_drift=previous",
              "--set", "audit.sanity_samples=0",
              "--set", "run.audit_fail_on=[flags:+0]", "-q"]  # fmt: skip
    first = _cli("run", *common, "--set", "source.limit=6")
    assert first.returncode == 0, first.stderr
    assert not (out / "audit" / "drift.json").exists()  # nothing to compare with yet
    second = _cli("run", *common)  # 6 new images: the audit covers all 12
    assert second.returncode == 0, second.stderr
    entries = sorted(p.name for p in (out / "audits").iterdir() if p.is_dir())
    assert len(entries) == 2 and (out / "audits" / "latest").read_text().strip() == entries[1]
    drift = json.loads((out / "audit" / "drift.json").read_text())
    assert drift["previous"] == entries[0] and drift["records"]["before"] == 6
    assert drift["records"]["after"] == 12 and drift["broken"] == []
    for entry in entries:
        archived = json.loads((out / "audits" / entry / "audit.json").read_text())
        assert (out / "audits" / entry / "report.html").is_file()
        maps = [part["mean_map"][len("audit/") :] for c in archived["classes"].values()
                for part in c["methods"].values()]  # fmt: skip
        assert all((out / "audits" / entry / m).is_file() for m in maps)
    assert "What changed since audits/" in (out / "audit" / "report.html").read_text()
    # Yesterday's audit pointed better than today's: the gate breaks, exit 6, all written.
    latest = out / "audits" / entries[1] / "audit.json"
    better = json.loads(latest.read_text())
    for method in better["methods"].values():
        method["localisation"]["pointing"] = 1.0
    latest.write_text(json.dumps(better))
    gated = _cli("audit", *common[:-3], "--set", "run.audit_fail_on=[pointing:-0.05]")
    assert gated.returncode == 6, gated.stderr
    assert "drift: broken rule pointing:-0.05: pointing of guided went from 1" in gated.stderr
    assert json.loads((out / "audit" / "drift.json").read_text())["broken"]
    assert len([p for p in (out / "audits").iterdir() if p.is_dir()]) == 3
