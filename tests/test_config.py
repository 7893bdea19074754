"""Config: defaults, YAML + overrides, and every invalid value rejected with key and fix."""

from __future__ import annotations

import glob
import os

import pytest

from pipeline import config as C
from pipeline.config import Config
from pipeline.config.checks import ConfigError
from pipeline.config.files import config_from_dict, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_defaults_match_the_seed_notebook():
    config = Config()
    assert config.saliency.samples == 50
    assert config.saliency.noise == 0.2
    assert config.saliency.target == "predicted"
    assert config.model.safe_mode is True


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml"))))
def test_every_shipped_config_is_valid(path):
    config = load_config(path)
    assert config.saliency.methods


def test_overrides_are_parsed_as_yaml_and_lists_become_tuples():
    config = load_config(
        os.path.join(ROOT, "configs", "local.yaml"),
        ["saliency.methods=[guided,smoothgrad]", "saliency.noise=0.1", "model.input_size=[32, 48]"],
    )
    assert config.saliency.methods == ("guided", "smoothgrad")
    assert config.saliency.noise == 0.1
    assert config.model.input_size == (32, 48)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("saliency.metods=[vanilla]", "did you mean 'saliency.methods'"),
        ("saliency.methods=[guidd]", "did you mean 'guided'"),
        ("saliency.methods=[]", "saliency.methods"),
        ("saliency.samples=0", "saliency.samples"),
        ("saliency.noise=-1", "saliency.noise"),
        ("saliency.precision=fp8", "saliency.precision"),
        ("saliency.target=class", "saliency.target_class"),
        ("saliency.top_k=3", "target 'top_k'"),
        ("source.kind=ftp", "source.kind"),
        ("source.resize=stretch", "source.resize"),
        ("source.max_pixels=0", "source.max_pixels"),
        ("batch.max_batch_size=0", "batch.max_batch_size"),
        ("batch.min_batch_size=64", "batch.min_batch_size"),
        ("model.input_size=[224]", "model.input_size"),
        ("model.preprocessing=imagenet", "model.preprocessing"),
        ("output.views=[heat]", "output.views"),
        ("output.min_artifact_size=0", "output.min_artifact_size"),
        ("output.min_artifact_size=4097", "output.min_artifact_size"),
        ("output.min_artifact_size=1.5", "output.min_artifact_size"),
        ("run.max_failure_fraction=2", "run.max_failure_fraction"),
        ("audit.faithfulness_steps=-1", "audit.faithfulness_steps"),
        ("audit.faithfulness_baseline=grey", "audit.faithfulness_baseline"),
        ("audit.sanity_samples=-2", "audit.sanity_samples"),
        ("audit.sanity_layers=0", "audit.sanity_layers"),
        ("audit.faithfulness_fraction=2", "audit.faithfulness_fraction"),
        ("audit.reservoir=1", "audit.reservoir"),
        ("nosection.key=1", "unknown config key"),
        ("saliency.samples", "section.key=value"),
    ],
)
def test_invalid_values_name_key_value_and_fix(override, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    message = str(info.value)
    assert fragment in message
    assert "Fix" in message or "section.key" in message


def test_bool_is_not_an_int():
    with pytest.raises(ConfigError, match="saliency.samples"):
        config_from_dict({"saliency": {"samples": True}})


def test_missing_config_file_says_how_to_fix(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_fingerprint_ignores_output_dir_but_not_method_settings():
    a = load_config(None, ["output.dir=/tmp/a"])
    b = load_config(None, ["output.dir=/tmp/b"])
    c = load_config(None, ["saliency.noise=0.3"])
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    assert a.run_id == b.run_id and a.run_id.startswith("cfg-")


def test_choices_and_defaults_are_declared_once():
    # choices.py holds every choice tuple and engine default (no imports); the config, the
    # engine and the Beam modules all use those very objects, so they cannot drift apart.
    import inspect

    from pipeline import choices
    from pipeline.beam import sinks, sources
    from pipeline.config import saliency as config_saliency
    from pipeline.engine import api, checks, explainer, precision, targets
    from pipeline.store import decode

    assert config_saliency.METHODS is choices.METHODS is checks.METHODS
    assert targets.TARGET_MODES is choices.TARGET_MODES is config_saliency.TARGET_MODES
    assert precision.PRECISIONS is choices.PRECISIONS is config_saliency.PRECISIONS
    assert decode.RESIZE_POLICIES is choices.RESIZE_POLICIES
    assert sinks.ARTIFACT_VIEWS is choices.ARTIFACT_VIEWS
    assert sources.SOURCE_KINDS is choices.SOURCE_KINDS
    # One set of engine defaults: the config section, the Explainer and explain() agree.
    section = C.SaliencyConfig()
    for fn in (explainer.Explainer.__init__, api.explain):
        params = inspect.signature(fn).parameters
        assert params["samples"].default == section.samples == choices.DEFAULT_SAMPLES
        assert params["noise"].default == section.noise
        assert params["seed"].default == section.seed
        assert params["precision"].default == section.precision == "float32"
        assert params["batch_size"].default == section.sample_batch_size
        assert params["ig_steps"].default == section.ig_steps
        assert params["ig_baseline"].default == section.ig_baseline


def test_min_artifact_size_default_and_override():
    assert Config().output.min_artifact_size == 192
    assert load_config(None, ["output.min_artifact_size=64"]).output.min_artifact_size == 64


def test_faithfulness_settings_change_the_fingerprint_only_when_the_audit_is_on():
    base = load_config(None, ["audit.enabled=true"])
    more = load_config(None, ["audit.enabled=true", "audit.faithfulness_steps=20"])
    assert base.fingerprint() != more.fingerprint()  # the records carry the curves
    off = load_config(None, ["audit.enabled=false", "audit.faithfulness_steps=20"])
    assert off.fingerprint() == load_config(None, []).fingerprint()
    # Clustering and sanity settings are read after the run: same records.
    tuned = load_config(None, ["audit.enabled=true", "audit.neighbours=5"])
    assert tuned.fingerprint() == base.fingerprint()
    assert off.audit.faithfulness == 0 and more.audit.faithfulness == 20


def test_beam_section_becomes_beam_flags_and_is_not_in_the_fingerprint():
    data = {"beam": {"runner": "DataflowRunner", "experiments": ["a", "b=1"], "no_auth": True,
                     "save_main_session": False, "max_num_workers": 8}}  # fmt: skip
    config = config_from_dict(data)
    assert config.beam.args() == [
        "--runner=DataflowRunner", "--experiments=a", "--experiments=b=1", "--no_auth",
        "--max_num_workers=8",
    ]  # fmt: skip
    assert config.to_dict()["beam"]["experiments"] == ["a", "b=1"]
    assert config.fingerprint() == Config().fingerprint()  # where it runs, not what
    overridden = load_config(None, ["beam.region=europe-west4"])
    assert overridden.beam.args() == ["--region=europe-west4"]


@pytest.mark.parametrize(
    ("beam", "fragment"),
    [
        ({"--runner": "X"}, "'beam.--runner'"),
        ({"runner": {"a": 1}}, "'beam.runner': got {'a': 1}"),
        ("runner", "a mapping of Beam flags is required"),
    ],
)
def test_bad_beam_section_names_the_key(beam, fragment):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"beam": beam})
    assert fragment in str(info.value)


def test_unknown_beam_option_in_the_config_is_named_with_its_key():
    from pipeline.beam.preflight import flag_problems

    config = config_from_dict({"beam": {"machne_type": "n1"}})
    problems = flag_problems(config.beam.args(), [], config.beam.names)
    assert problems == [
        "config key 'beam.machne_type': not a Beam option. Did you mean beam.machine_type?"
    ]


def test_keys_added_later_change_the_run_id_only_when_set():
    """At their defaults, keys added after outputs existed compute what the version before
    them did: the run id (and so an incremental rerun after an upgrade) is unchanged."""
    base = load_config(None, [])
    assert base.fingerprint() == "626311a741cfb1ac"  # main 38e4193, before these keys
    assert load_config(None, ["output.fsync=false"]).fingerprint() == base.fingerprint()
    for setting in ("model.head=sigmoid", "saliency.gradcam_layer=conv",
                    "source.labels=folders"):  # fmt: skip
        assert load_config(None, [setting]).fingerprint() != base.fingerprint(), setting
    labels_above = ["saliency.target=labels_above"]
    assert (load_config(None, [*labels_above, "saliency.threshold=0.3"]).fingerprint()
            != load_config(None, labels_above).fingerprint())  # fmt: skip
