"""Reliability of the batch job over inputs nobody curated (issue 5), one test per point:
bad and odd inputs, the failure policy, output paths, incremental runs, numerics and
memory, model loading, untrusted inputs. Crash safety: test_crash_safety.py.

One tiny model (conftest.py's tiny_model); each run is an in-process DirectRunner run of a few
16x16 images, or the command line in-process (cli.main) where the exit code matters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import re
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from pipeline import cli
from pipeline.beam import handler, sinks
from pipeline.beam.run import run
from pipeline.config.checks import ConfigError
from pipeline.config.files import load_config
from pipeline.elements import ImageItem, SaliencyRecord
from pipeline.engine.model_geometry import model_geometry
from pipeline.testing.reliability import (
    SIZE,
    base_overrides,
    check_complete,
    encode,
    noise_png,
    save_tiny_model,
    write_files,
)

ROOT = Path(__file__).resolve().parent.parent
MAX_PIXELS = 100_000


def _cli(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["run", *args])
    return code, err.getvalue()


def _sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


# ------------------------------------------------------------ 1-3: an uncurated bucket


def _odd_but_valid() -> dict[str, bytes]:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    halves = np.zeros((4, 8, 3), np.uint8)
    halves[:, :4] = (255, 0, 0)
    halves[:, 4:] = (0, 0, 255)
    frames = [Image.new("RGB", (6, 4), c) for c in ((255, 0, 0), (0, 255, 0))]
    palette = Image.new("P", (5, 5), 1)
    palette.putpalette([0, 0, 0, 200, 30, 60])
    return {
        "plain.jpg": encode(Image.new("RGB", (40, 30), (10, 120, 200)), "JPEG", quality=95),
        "cmyk.jpg": encode(Image.new("CMYK", (12, 12), (0, 255, 255, 0)), "JPEG", quality=95),
        "sixteen.png": encode(Image.fromarray(np.full((9, 7), 65535, np.uint16)), "PNG"),
        "palette.png": encode(palette, "PNG"),
        "rgba.png": encode(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), "PNG"),
        "anim.gif": encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "exif.png": encode(Image.fromarray(halves), "PNG", exif=exif.tobytes()),
        "one.png": encode(Image.new("RGB", (1, 1), (9, 8, 7)), "PNG"),
        "wide.png": encode(Image.new("RGB", (300, 1), (40, 40, 40)), "PNG"),
        "tall.png": encode(Image.new("RGB", (1, 300), (80, 80, 80)), "PNG"),
        "gray.jpg": encode(Image.new("L", (10, 10), 77), "JPEG", quality=95),
        # odd names
        "with space.png": noise_png(1),
        "ünïcødé.png": noise_png(2),
        "a..b.jpg": encode(Image.new("RGB", (9, 9), (1, 2, 3)), "JPEG"),
        "..dots.png": noise_png(3),
        "x..y/inner.png": noise_png(4),
        "a/b.png": noise_png(5),  # a/b.png and a_b.png must not share an artifact path
        "a_b.png": noise_png(6),
    }


def _bad_crc_png() -> bytes:
    data = bytearray(noise_png(7))
    at = data.index(b"IDAT")
    length = int.from_bytes(data[at - 4 : at], "big")
    data[at + 4 + length] ^= 0x01  # a CRC byte: the pixels still inflate, wrongly trusted
    return bytes(data)


BAD = {  # name -> (stage, what the reason says)
    "empty.jpg": ("decode", "empty input"),
    "truncated.jpg": ("decode", "cannot decode"),
    "random.png": ("decode", "not a recognised image"),
    "page.jpg": ("decode", "not a recognised image"),
    "notes.png": ("decode", "not a recognised image"),
    "badcrc.png": ("decode", "CRC"),
    "bomb.png": ("decode", f"max_pixels={MAX_PIXELS}"),
    "dangling.jpg": ("read", "No such file"),
    "loop.jpg": ("read", "symbolic links"),
    "ping.png": ("read", "symbolic links"),
    "pong.png": ("read", "symbolic links"),
}
NON_UTF8 = os.fsdecode(b"\xff\xfe.png")  # a name that is not UTF-8


@pytest.fixture(scope="module")
def audit(tmp_path_factory, tiny_model):
    """One CLI run over a bucket of odd, bad and odd-named files plus a second pattern
    whose root holds a file of the same name; failure budget 20% (exceeded)."""
    root = tmp_path_factory.mktemp("audit")
    bucket, other = str(root / "bucket"), str(root / "other")
    noise = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    photo = encode(Image.fromarray(noise), "JPEG", quality=95)  # headers ~0.6 kB of ~8 kB
    write_files(bucket, _odd_but_valid())
    write_files(
        bucket,
        {
            "empty.jpg": b"",
            "truncated.jpg": photo[: len(photo) // 2],
            "random.png": np.random.default_rng(0).bytes(3000),
            "page.jpg": b"<!DOCTYPE html><html><body>Not Found</body></html>",
            "notes.png": b"just some text with an image extension\n",
            "badcrc.png": _bad_crc_png(),
            "bomb.png": encode(Image.new("RGB", (400, 400)), "PNG"),  # 160000 pixels
            "README.txt": b"not an image extension: not an input",
        },
    )
    with open(os.path.join(os.fsencode(bucket), os.fsencode(NON_UTF8)), "wb") as handle:
        handle.write(noise_png(8))
    os.symlink(os.path.join(bucket, "missing.jpg"), os.path.join(bucket, "dangling.jpg"))
    os.symlink("loop.jpg", os.path.join(bucket, "loop.jpg"))
    os.symlink("pong.png", os.path.join(bucket, "ping.png"))
    os.symlink("ping.png", os.path.join(bucket, "pong.png"))
    os.symlink(".", os.path.join(bucket, "x..y", "again"))  # a directory loop
    write_files(other, {"plain.jpg": noise_png(9)})  # same name, other pattern root
    out = str(root / "out")
    overrides = base_overrides(tiny_model, f"{bucket}/**,{other}/*", out)
    overrides += [f"source.max_pixels={MAX_PIXELS}", "run.max_failure_fraction=0.2"]
    code, stderr = _cli(*_sets(overrides))
    good = sorted(
        [f"bucket/{k}" for k in _odd_but_valid()] + ["bucket/\\xff\\xfe.png", "other/plain.jpg"]
    )
    return {"out": out, "code": code, "stderr": stderr, "good": good}


@pytest.mark.slow
def test_every_input_is_a_record_or_a_failure_with_its_reason(audit):
    got = check_complete(audit["out"])
    assert sorted(r.key for r in got["records"]) == audit["good"]
    failures = {f["key"]: f for f in got["failures"]}
    assert sorted(failures) == sorted(f"bucket/{name}" for name in BAD)
    for name, (stage, reason) in BAD.items():
        failure = failures[f"bucket/{name}"]
        assert failure["stage"] == stage and reason in failure["error"], failure
    summary = got["summary"]
    assert summary["inputs"] == len(audit["good"]) + len(BAD) == 31
    assert (summary["images_written"], summary["images_failed"]) == (20, 11)
    assert summary["images_skipped"] == 0 and summary["reconciled"] is True


@pytest.mark.slow
def test_odd_images_are_decoded_as_they_display(audit):
    images = {r.key.removeprefix("bucket/"): r.image.astype(int) for r in
              check_complete(audit["out"])["records"]}  # fmt: skip
    assert images["sixteen.png"].min() == 255  # 16-bit 65535 -> 255
    assert (images["palette.png"] == (200, 30, 60)).all()
    assert (images["rgba.png"] == 255).all()  # transparent -> over white
    assert (images["anim.gif"] == (255, 0, 0)).all()  # the first frame
    assert (images["one.png"] == (9, 8, 7)).all()
    assert np.abs(images["cmyk.jpg"] - (255, 0, 0)).max() <= 8
    assert (images["gray.jpg"] == images["gray.jpg"][..., :1]).all()
    # EXIF orientation 6: the left (red) half of the stored pixels is shown on top.
    exif = images["exif.png"]
    assert (exif[: SIZE // 2 - 1] == (255, 0, 0)).all()
    assert (exif[SIZE // 2 + 1 :] == (0, 0, 255)).all()
    assert images["wide.png"].shape == images["tall.png"].shape == (SIZE, SIZE, 3)


@pytest.mark.slow
def test_too_many_failures_exit_3_saying_why_and_outputs_are_kept(audit):
    assert audit["code"] == cli.EXIT_TOO_MANY_FAILURES == 3
    assert "35.5% of inputs failed, above run.max_failure_fraction=0.2" in audit["stderr"]
    got = check_complete(audit["out"])  # all 20 good images were still published
    assert len(got["records"]) == len(got["manifest"]) == 20


@pytest.mark.slow
def test_artifact_paths_stay_inside_the_output_and_never_collide(audit):
    out = os.path.realpath(audit["out"])
    rows = check_complete(audit["out"])["manifest"]
    dirs = {}
    for row in rows:
        (path,) = row["artifacts"]["vanilla"].values()
        full = os.path.realpath(os.path.join(out, path))
        assert full.startswith(os.path.join(out, "artifacts") + os.sep)
        dirs[row["key"]] = os.path.dirname(full)
    assert len(set(dirs.values())) == len(dirs) == 20
    assert dirs["bucket/a/b.png"] != dirs["bucket/a_b.png"]
    assert dirs["bucket/plain.jpg"] != dirs["other/plain.jpg"]
    assert dirs["bucket/..dots.png"] == os.path.join(out, "artifacts", "bucket", "..dots.png")


# ------------------------------------------------------------ 5: incremental runs


@pytest.mark.slow
def test_incremental_runs_do_only_new_work_and_recompute_on_changes(tmp_path, tiny_model):
    bucket, out = str(tmp_path / "bucket"), str(tmp_path / "out")
    write_files(bucket, {f"{i}.png": noise_png(i) for i in range(4)} | {"bad.jpg": b"x"})

    def incremental(*extra: str, model_path: str = tiny_model):
        overrides = base_overrides(model_path, f"{bucket}/*", out)
        config = load_config(None, [*overrides, "run.incremental=true", *extra])
        s = run(config)
        assert s.inputs == s.images_written + s.images_failed + s.images_skipped
        got = check_complete(out)
        assert s.records_total == len(got["records"])
        return s, got

    s, got = incremental()
    assert (s.images_written, s.images_skipped, s.images_failed) == (4, 0, 1)
    shards = sorted(os.listdir(os.path.join(out, "records")))

    s, got = incremental()  # nothing new: nothing computed, nothing rewritten
    assert (s.images_written, s.images_skipped, s.images_failed) == (0, 4, 1)
    assert sorted(os.listdir(os.path.join(out, "records"))) == shards

    write_files(bucket, {"new.png": noise_png(10)})
    s, got = incremental()
    assert (s.images_written, s.images_skipped, s.records_total) == (1, 4, 5)
    assert sorted(r.key for r in got["records"]) == ["0.png", "1.png", "2.png", "3.png", "new.png"]

    write_files(bucket, {"2.png": noise_png(20)})  # changed content under the same key
    s, got = incremental()
    assert (s.images_written, s.images_skipped, s.records_total) == (1, 4, 5)
    by_key = {r.key: r for r in got["records"]}
    assert len(by_key) == 5  # the old record of 2.png is gone, not duplicated
    assert by_key["2.png"].sha256 == hashlib.sha256(noise_png(20)).hexdigest()

    s, got = incremental("saliency.methods=[guided]")  # other method: all recomputed
    assert (s.images_written, s.images_skipped) == (5, 0)
    assert {r.methods for r in got["records"]} == {("guided",)}
    assert len({row["shard_set"] for row in got["manifest"]}) == 1  # old sets removed

    other = save_tiny_model(str(tmp_path / "other.keras"), seed=11)
    s, got = incremental("saliency.methods=[guided]", model_path=other)  # other model
    assert (s.images_written, s.images_skipped) == (5, 0)
    assert len({r.model_fingerprint for r in got["records"]}) == 1
    assert (
        got["records"][0].model_fingerprint
        == model_geometry(
            load_config(None, base_overrides(other, "x", out)).model, class_names=()
        ).fingerprint
    )


# ------------------------------------------------------------ 6: numerics and memory


class _Rigged:
    """An Explainer stand-in: delegates, but poisons all-white images with NaN maps and
    marks all-black images as recomputed in float32 (as saliency.Explainer reports it)."""

    def __init__(self, inner, *, oom_if=None):
        self._inner = inner
        self._oom_if = oom_if
        self.calls: list[int] = []

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def explain(self, x, method, *, targets, seeds=None):
        self.calls.append(len(x))
        if self._oom_if is not None and self._oom_if(x):
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
        e = self._inner.explain(x, method, targets=targets)
        flat = x.reshape(len(x), -1)
        white, black = flat.min(axis=1) >= 1.0, flat.max(axis=1) <= 0.0
        gradients = np.array(e.gradients)
        gradients[white] = np.nan
        return dataclasses.replace(
            e, gradients=gradients, recomputed=int(black.sum()), recomputed_rows=black
        )


@pytest.mark.slow
def test_nan_maps_are_failures_never_records_and_recomputes_are_counted(
    tmp_path, tiny_model, monkeypatch
):
    bucket, out = str(tmp_path / "bucket"), str(tmp_path / "out")
    solid = {"white.png": 255, "black.png": 0}
    write_files(bucket, {k: encode(Image.new("RGB", (8, 8), (v,) * 3), "PNG") for k, v in
                         solid.items()} | {"noise.png": noise_png(1)})  # fmt: skip
    real = handler.make_explainer
    monkeypatch.setattr(handler, "make_explainer", lambda *a, **k: _Rigged(real(*a, **k)))
    config = load_config(None, base_overrides(tiny_model, f"{bucket}/*", out))
    summary = run(config)
    got = check_complete(out)  # asserts every written gradient is finite
    assert sorted(r.key for r in got["records"]) == ["black.png", "noise.png"]
    assert [(f["key"], f["stage"]) for f in got["failures"]] == [("white.png", "numerics")]
    assert "NaN" in got["failures"][0]["error"]
    assert {r.key: r.recomputed for r in got["records"]} == {"black.png": 1, "noise.png": 0}
    assert summary.maps_recomputed == 1 and summary.images_failed == 1 and summary.reconciled


def _record(gradient: np.ndarray, score: float = 1.0) -> SaliencyRecord:
    return SaliencyRecord(
        key="k.png", source="/k.png", label=-1, sha256="0" * 64,
        pixels=np.zeros((2, 2, 3), np.uint8), prediction_class=0, prediction_probability=0.5,
        top_k_classes=(0,), top_k_probabilities=(0.5,), target_class=0, target_rank=0,
        target_score=score, gradients={"vanilla": gradient}, run_id="r", model_name="m",
        model_fingerprint="f",
    )  # fmt: skip


def test_the_sink_guard_turns_non_finite_records_into_failures():
    ok = np.ones((2, 2, 3), np.float16)
    inf = ok.copy()
    inf[0, 0, 0] = np.inf
    assert sinks.non_finite_fields(_record(ok)) == []
    assert sinks.non_finite_fields(_record(inf)) == ["gradients['vanilla']"]
    assert sinks.non_finite_fields(_record(ok, score=float("nan"))) == ["target_score"]
    with beam.Pipeline() as p:
        guarded = p | beam.Create([_record(ok), _record(inf)]) | sinks.GuardFinite()
        assert_that(
            guarded.records | "Gradients" >> beam.Map(_gradient_bytes),
            equal_to([ok.tobytes()]),
            label="Kept",
        )
        assert_that(
            guarded.failures | "Stages" >> beam.Map(_key_stage),
            equal_to([("k.png", "numerics")]),
            label="Failed",
        )


def _gradient_bytes(record: SaliencyRecord) -> bytes:
    return record.gradients["vanilla"].tobytes()


def _key_stage(failure) -> tuple[str, str]:
    return failure.key, failure.stage


def test_handler_splits_out_of_memory_batches_and_fails_non_finite_images(tiny_model):
    config = load_config(None, base_overrides(tiny_model, "x", "/nonexistent"))
    engine = handler.load_engine(config.model, config.saliency, config.batch)
    reference = engine.explainer
    rng = np.random.default_rng(0)
    items = [
        ImageItem(
            key=f"{i}.png",
            source=f"/{i}.png",
            label=-1,
            sha256=str(i),
            pixels=rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8),
            original_height=SIZE,
            original_width=SIZE,
        )  # fmt: skip
        for i in range(4)
    ]
    engine.explainer = rigged = _Rigged(reference, oom_if=_more_than_one)
    model_handler = handler.SaliencyModelHandler(
        model=config.model, saliency=config.saliency, batch=config.batch, run_id="t"
    )
    outputs = [o for r in model_handler.run_inference(items, engine) for o in r.inference]
    assert rigged.calls == [4, 2, 1, 1, 2, 1, 1]  # halved until it fits, each image once
    assert [type(o).__name__ for o in outputs] == ["SaliencyRecord"] * 4
    for item, record in zip(items, outputs):
        x = np.asarray(engine.loaded.preprocess(item.pixels[None].astype(np.float32)))
        want = reference.explain(x, "vanilla", targets=np.array([record.target_class]))
        np.testing.assert_allclose(
            record.gradients["vanilla"].astype(np.float32), want.gradients[0], rtol=2e-3,
            atol=1e-3 * float(np.abs(want.gradients[0]).max()),
        )  # fmt: skip

    # Out of memory even alone: that image fails at stage "explain", the others do not.
    first = np.asarray(engine.loaded.preprocess(items[0].pixels[None].astype(np.float32)))[0]

    def too_big(x: np.ndarray) -> bool:
        return len(x) > 1 or np.array_equal(x[0], first)

    engine.explainer = _Rigged(reference, oom_if=too_big)
    outputs = [o for r in model_handler.run_inference(items, engine) for o in r.inference]
    assert [(o.key, type(o).__name__) for o in outputs] == [
        ("0.png", "Failure"),
        ("1.png", "SaliencyRecord"),
        ("2.png", "SaliencyRecord"),
        ("3.png", "SaliencyRecord"),
    ]
    assert outputs[0].stage == "explain" and "ResourceExhausted" in outputs[0].error

    # The handler itself turns an image with NaN maps into a "numerics" failure.
    white = dataclasses.replace(items[2], pixels=np.full_like(items[2].pixels, 255))
    engine.explainer = _Rigged(reference)
    batch = [items[0], white, items[1]]
    outputs = [o for r in model_handler.run_inference(batch, engine) for o in r.inference]
    assert [(o.key, type(o).__name__) for o in outputs] == [
        ("0.png", "SaliencyRecord"),
        ("2.png", "Failure"),
        ("1.png", "SaliencyRecord"),
    ]
    assert outputs[1].stage == "numerics" and "['vanilla']" in outputs[1].error


def _more_than_one(x: np.ndarray) -> bool:
    return len(x) > 1


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["missing", "corrupt", "lambda"])
def test_a_model_that_cannot_load_fails_fast_before_any_data_is_read(
    tmp_path, monkeypatch, problem
):
    path = str(tmp_path / "model.keras")
    if problem == "corrupt":
        Path(path).write_bytes(np.random.default_rng(0).bytes(4096))
    elif problem == "lambda":
        save_tiny_model(path, with_lambda=True)

    def no_reading(self, pbegin):
        raise AssertionError("data was read")

    from pipeline.beam import sources

    monkeypatch.setattr(sources.ReadImages, "expand", no_reading)
    out = tmp_path / "out"
    code, stderr = _cli(*_sets(base_overrides(path, str(ROOT / "examples/images/*"), str(out))))
    if problem == "lambda":  # found while loading: exit 4
        assert code == cli.EXIT_MODEL == 4, stderr
        assert "the model could not be loaded, nothing was read" in stderr
    else:  # found by the file checks before loading: one line, exit 2
        assert code == cli.EXIT_CONFIG == 2, stderr
        assert ("no such file" if problem == "missing" else "not a valid .keras") in stderr
    assert not out.exists()
    if problem == "lambda":  # refused by safe mode, and the message says how to allow it
        assert "safe_mode" in stderr and "Lambda" in stderr


# ------------------------------------------------------------ 7: untrusted inputs


@pytest.mark.slow
def test_user_strings_never_reach_a_shell(tmp_path, tiny_model):
    marker = tmp_path / "pwned"
    pattern = f"{tmp_path}/$(touch {marker})`touch {marker}`;touch {marker}*.png"
    code, stderr = _cli(*_sets(base_overrides(tiny_model, pattern, str(tmp_path / "out"))))
    assert code == cli.EXIT_CONFIG == 2, stderr
    assert "matches no image file" in stderr
    assert not marker.exists()


UNSAFE = re.compile(
    r"\bpickle\b|\bdill\b|cloudpickle|\bmarshal\b|\bsubprocess\b|os\.system|os\.popen|"
    r"\beval\(|\bexec\(|yaml\.load\(|yaml\.unsafe_load|shell\s*=\s*True|allow_pickle|"
    r"np\.load\(|__import__|importlib"
)


# Deliberate imports by name, each of a module the user configured, never of data:
# model.custom_objects' "module:attr" paths (as Keras's own custom_objects), and Beam's
# runner modules / a --runner class path (as Beam itself resolves it). Lines per file.
IMPORTS_BY_NAME = {"beam/preflight.py": 5, "engine/model_files.py": 2}


def test_the_package_has_no_pickle_loading_shell_or_eval():
    hits: dict[str, list[str]] = {}
    for path in sorted((ROOT / "pipeline").rglob("*.py")):  # every room, not the top only
        if path.parent.name == "testing":  # test support: starts servers and the CLI on purpose
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if UNSAFE.search(line.split("#", 1)[0]):
                name = path.relative_to(ROOT / "pipeline").as_posix()
                hits.setdefault(name, []).append(f"{number}: {line.strip()}")
    assert {name: len(lines) for name, lines in hits.items()} == IMPORTS_BY_NAME, hits
    assert all("importlib" in line for lines in hits.values() for line in lines), hits
    assert len(list((ROOT / "pipeline").rglob("*.py"))) > 60  # the whole package was read
    assert UNSAFE.search("data = pickle.loads(blob)")  # the check itself works
    assert "yaml.safe_load" in (ROOT / "pipeline" / "config/files.py").read_text()


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("run.max_failure_fraction=1.5", "run.max_failure_fraction"),
        ("run.incremental=sometimes", "run.incremental"),
        ("source.max_pixels=0", "source.max_pixels"),
        ("model.safe_mode=no way", "model.safe_mode"),
        ("output.num_shards=-1", "output.num_shards"),
    ],
)
def test_reliability_settings_are_validated(override, key):
    with pytest.raises(ConfigError, match=re.escape(f"config key '{key}'")):
        load_config(None, [override])
