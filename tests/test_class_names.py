"""model.class_names: a list or a file (lines, a JSON list, Keras's ImageNet index), checked
against the model's classes before any data is read, and carried into records."""

import json

import pytest

from pipeline.config import ModelConfig
from pipeline.config.checks import ConfigError
from pipeline.engine.model_geometry import model_geometry
from pipeline.store.class_names import class_name, load_class_names


def test_names_from_a_list_lines_json_and_the_keras_imagenet_index(tmp_path):
    assert load_class_names(("a", "b")) == ("a", "b") and load_class_names("") == ()
    lines = tmp_path / "names.txt"
    lines.write_text("circle\nsquare\n\n")
    assert load_class_names(str(lines)) == ("circle", "square")
    listed = tmp_path / "names.json"
    listed.write_text(json.dumps(["x", "y"]))
    assert load_class_names(str(listed)) == ("x", "y")
    index = tmp_path / "imagenet_class_index.json"
    index.write_text(json.dumps({"1": ["n01443537", "goldfish"], "0": ["n01440764", "tench"]}))
    assert load_class_names(str(index)) == ("tench", "goldfish")
    assert class_name(("a",), 0) == "a" and class_name(("a",), 3) == ""
    broken = tmp_path / "bad.json"
    broken.write_text("{nope")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_class_names(str(broken))
    with pytest.raises(ConfigError, match="model.class_names"):
        ModelConfig(class_names=7)
    assert ModelConfig(class_names=["a", "b"]).class_names == ("a", "b")


def test_a_names_count_that_does_not_match_the_model_is_refused_before_reading(tmp_path):
    m = ModelConfig(class_names=("a", "b", "c"))
    with pytest.raises(ConfigError, match="3 names for a model with 5 classes"):
        model_geometry(m, class_names=m.class_names)
