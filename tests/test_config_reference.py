"""docs/configuration.md is generated from the config code and equal to it."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

from pipeline import config

ROOT = Path(__file__).resolve().parent.parent
_SPEC = importlib.util.spec_from_file_location(
    "config_reference", ROOT / "docs/config_reference.py"
)
_GENERATOR = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_GENERATOR)  # a docs tool, not a package module
field_docs, reference = _GENERATOR.field_docs, _GENERATOR.reference


def test_docs_configuration_is_the_generated_reference():
    text = (ROOT / "docs/configuration.md").read_text()
    assert text == reference(), (
        "docs/configuration.md is stale: python docs/config_reference.py > docs/configuration.md"
    )


def test_every_key_is_documented_with_its_default():
    text = reference()
    for name, section in config.SECTIONS.items():
        docs = field_docs(section)
        for field in dataclasses.fields(section):
            assert docs.get(field.name), f"{name}.{field.name} has no comment in pipeline/config/"
            assert f"| `{name}.{field.name}` |" in text
    # defaults are the code's, rendered as YAML
    assert "| `saliency.samples` | `50` |" in text
    assert "| `saliency.methods` | `[vanilla, guided, smoothgrad]` |" in text
    assert "| `model.input_size` | `null` |" in text
    assert "| `output.fsync` | `true` |" in text
    assert '| `source.key_key` | `""` |' in text


def test_comments_above_and_beside_a_field_are_joined():
    @dataclasses.dataclass
    class Section:
        # first line
        # second line
        a: int = 1  # beside
        b: str = ""

        c: int = 2  # only beside

    assert field_docs(Section) == {
        "a": "first line second line beside",
        "b": "",
        "c": "only beside",
    }
