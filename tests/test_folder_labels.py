"""source.labels: folders: class folders (data/<class>/*.jpg, the layout of Keras's
image_dataset_from_directory) give each image its label, and their names are the class
names unless model.class_names says otherwise."""

from __future__ import annotations

import os

import pytest

from pipeline import cli
from pipeline.audit.pipeline import run_audit
from pipeline.beam.run import run
from pipeline.config.checks import ConfigError
from pipeline.config.files import load_config
from pipeline.store.files import read_jsonl
from pipeline.store.listing import class_folders, folder_label
from pipeline.testing.reliability import base_overrides, noise_png, read_records, write_files

CLASSES = ("cat", "dog", "zebra")  # the tiny model has 3 classes


def _tree(root: str, classes=CLASSES, per_class: int = 2) -> None:
    files = {f"{c}/{c}_{i}.png": noise_png(10 * k + i) for k, c in enumerate(classes)
             for i in range(per_class)}  # fmt: skip
    write_files(root, {**files, "stray.png": noise_png(99)})
    os.makedirs(os.path.join(root, ".hidden"))


def test_folders_are_sorted_and_labels_follow_them(tmp_path):
    _tree(str(tmp_path), classes=("zebra", "cat", "dog"))
    assert class_folders(str(tmp_path) + "/") == ("cat", "dog", "zebra")
    ids = {name: i for i, name in enumerate(class_folders(str(tmp_path) + "/"))}
    assert folder_label("dog/x.png", ids) == 1
    assert folder_label("zebra/sub/x.png", ids) == 2  # the first folder decides
    assert folder_label("stray.png", ids) == -1  # directly under the root
    assert folder_label("other/x.png", ids) == -1


def test_labels_are_checked_with_the_source():
    with pytest.raises(ConfigError, match="source.labels.*kind 'files' only"):
        load_config(None, ["source.kind=tfrecord", "source.labels=folders"])
    with pytest.raises(ConfigError, match="source.labels"):
        load_config(None, ["source.labels=subdirs"])


@pytest.mark.slow
def test_a_class_folder_tree_runs_with_labels_and_names(tmp_path, tiny_model):
    data = str(tmp_path / "data")
    _tree(data)
    out = str(tmp_path / "out")
    extra = ["source.labels=folders", "saliency.target=label", "audit.enabled=true",
             "audit.sanity_samples=0"]  # fmt: skip
    overrides = [*base_overrides(tiny_model, f"{data}/**", out), *extra]
    summary = run(load_config(None, overrides))
    assert (summary.inputs, summary.images_written, summary.images_failed) == (7, 6, 1)
    got = {r.key: r for r in read_records(out)}
    assert sorted(got) == sorted(f"{c}/{c}_{i}.png" for c in CLASSES for i in range(2))
    for key, record in got.items():
        label = CLASSES.index(key.split("/")[0])
        assert (record.label, record.target_class) == (label, label)
        assert record.target_name == CLASSES[label]
        assert record.prediction_name == CLASSES[record.prediction_class]
    failures = read_jsonl(os.path.join(out, "failures.jsonl"))
    assert [(f["key"], f["stage"]) for f in failures] == [("stray.png", "explain")]
    # the audit groups by the folder labels
    audit = run_audit(load_config(None, overrides)).audit
    assert sorted(audit["labels"]) == ["0", "1", "2"]
    assert sum(v["count"] for v in audit["labels"].values()) == 6 * 1  # one method

    # model.class_names, when given, name the classes instead of the folders
    named = [*overrides, "model.class_names=[a, b, c]", f"output.dir={tmp_path / 'named'}"]
    run(load_config(None, named))
    assert {r.target_name for r in read_records(str(tmp_path / "named"))} == {"a", "b", "c"}


@pytest.mark.slow
def test_folders_that_do_not_match_the_model_exit_2_before_reading(tmp_path, tiny_model, capsys):
    data = str(tmp_path / "data")
    _tree(data, classes=("cat", "dog"))  # 2 folders, 3 classes
    out = str(tmp_path / "out")
    sets = [*base_overrides(tiny_model, f"{data}/**", out), "source.labels=folders"]
    args = [a for s in sets for a in ("--set", s)]
    assert cli.main(["run", *args, "-q"]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "2 class folders below" in err and "(cat, dog)" in err and "3 classes" in err
    assert not os.path.exists(out)
    flat = str(tmp_path / "flat")
    write_files(flat, {"a.png": noise_png(1)})  # no folder at all: said before the model loads
    sets = [*base_overrides(tiny_model, f"{flat}/*", out), "source.labels=folders"]
    assert cli.main(["run", *[a for s in sets for a in ("--set", s)], "-q"]) == cli.EXIT_CONFIG
    assert "no folder below" in capsys.readouterr().err
