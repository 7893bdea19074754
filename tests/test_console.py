"""What a person sees: the default job's console, the progress bar on a terminal, and one
clear line (exit 2, nothing left behind) for every bad environment."""

import fcntl
import importlib
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from pipeline import __version__
from pipeline.beam.handler import SaliencyModelHandler
from pipeline.beam.preflight import FILESYSTEM_PACKAGES
from pipeline.config import BatchConfig, ModelConfig, SaliencyConfig
from pipeline.testing.processes import cli_command, run_cli

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "model" / "shapes_cnn.keras"
NOISE = ("Converting string literal", "Resource module", "apitools", "oneDNN", "absl")


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    return {**env, **extra}


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_cli(*args, env=env or _env())  # TF_CPP_* unset: what a user's shell has


@pytest.mark.slow
def test_the_default_job_prints_its_own_lines_only(tmp_path):
    out = tmp_path / "out"
    proc = _cli("run", "--config", "configs/local.yaml", "--set", f"output.dir={out}")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) <= 10, proc.stderr
    assert not [line for line in lines if any(n in line for n in NOISE)]
    assert any("progress: 12/12 images" in line for line in lines)  # not a TTY: log lines
    summary = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(summary) == 1 and summary[0].startswith("12 of 12 images explained, 0 failed")
    as_json = _cli("run", "--config", "configs/local.yaml", "--set", f"output.dir={out}", "--json")
    head = as_json.stdout[: as_json.stdout.rindex("}") + 1]
    assert json.loads(head)["images_written"] == 12
    quiet = _cli("run", "--config", "configs/local.yaml", "--set", f"output.dir={out}", "-q")
    assert quiet.returncode == 0 and quiet.stderr == ""


@pytest.mark.slow
def test_a_terminal_gets_a_progress_bar(tmp_path):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        cli_command(["run", "--config", "configs/local.yaml", "--set",
                     f"output.dir={tmp_path / 'out'}"]),
        cwd=ROOT, env=_env(), stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
    )  # fmt: skip
    os.close(slave)
    chunks, deadline = [], time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            data = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=60) == 0
    os.close(master)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert "explaining: 100%" in screen and "12/12" in screen and "0 failed" in screen
    assert "img/s" in screen  # the rate (and tqdm's time left) on the bar
    assert "12 of 12 images explained" in screen


BAD_ENVIRONMENTS = [
    "misspelled flag", "misspelled --set", "unknown runner", "dask", "dask class path",
    "unwritable output", "file as parent", "missing extra", "missing model", "corrupt model",
    "no inputs",
]  # fmt: skip


def _missing_scheme() -> tuple[str, str]:
    """A scheme whose client library is not installed here, and what installs it."""
    for scheme, (module, package) in FILESYSTEM_PACKAGES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            return scheme, package
    raise AssertionError("every object-store filesystem is installed; none to test with")


def _bad_environments(tmp: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "a_file").write_text("x")
    (tmp / "corrupt.keras").write_bytes(MODEL.read_bytes()[:1000])
    (tmp / "empty").mkdir()
    scheme, package = _missing_scheme()
    return {
        "misspelled flag": (["--runer=DataflowRunner"], "flag --runer. Did you mean --runner?"),
        "misspelled --set": (["--sett", "source.limit=2"], "Did you mean --set?"),
        "unknown runner": (["--runner=NoSuchRunner"], "is not a Beam runner"),
        "dask": (["--runner=DaskRunner"], "is refused: Beam 2.77's DaskRunner"),
        "dask class path": (
            ["--runner=apache_beam.runners.dask.dask_runner.DaskRunner"],
            "is refused",
        ),
        "unwritable output": (["--set", "output.dir=/sys/saliency-out"], "is not writable"),
        "file as parent": (["--set", f"output.dir={tmp}/a_file/out"], "is a file"),
        "missing extra": (
            ["--set", f"output.dir={scheme}://bucket/out"],
            f"no filesystem for {scheme}:// is installed. Fix: pip install '{package}'.",
        ),
        "missing model": (["--set", f"model.name={tmp}/nope.keras"], "no such file"),
        "corrupt model": (["--set", f"model.name={tmp}/corrupt.keras"], "not a valid .keras"),
        "no inputs": (["--set", f"source.pattern={tmp}/empty/*.jpg"], "matches no image"),
    }  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", BAD_ENVIRONMENTS)
def test_every_bad_environment_is_one_line_exit_2_and_leaves_nothing(tmp_path, case):
    flags, message = _bad_environments(tmp_path)[case]
    out = tmp_path / "never"
    proc = _cli(
        "run", "--config", "configs/local.yaml", "--set", f"output.dir={out}", *flags
    )  # a later --set output.dir wins over this one
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not out.exists()  # no output dir, no .lock
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.slow
def test_custom_objects_are_named_then_loaded(tmp_path):
    (tmp_path / "my_layers.py").write_text(
        "import keras\n\n\nclass Doubler(keras.layers.Layer):\n"
        "    def call(self, x):\n        return x * 2.0\n"
    )
    build = (
        "import keras, my_layers\n"
        "i = keras.Input((64, 64, 3))\n"
        "h = keras.layers.Conv2D(4, 3, activation='relu')(my_layers.Doubler()(i))\n"
        "h = keras.layers.GlobalAveragePooling2D()(h)\n"
        "keras.Model(i, keras.layers.Dense(5)(h)).save('custom.keras')\n"
    )
    env = _env(PYTHONPATH=str(tmp_path))
    subprocess.run([sys.executable, "-c", build], cwd=tmp_path, env=env, check=True)
    model = ["--set", f"model.name={tmp_path / 'custom.keras'}", "--set", "source.limit=2"]
    out = ["--set", f"output.dir={tmp_path / 'out'}"]
    refused = _cli("run", "--config", "configs/local.yaml", *model, *out, env=env)
    assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert "needs custom objects that are not registered: Doubler (module 'my_layers')" in (
        refused.stderr
    )
    named = ["--set", "model.custom_objects=['my_layers:Doubler']"]
    ran = _cli("run", "--config", "configs/local.yaml", *model, *named, *out, "-q", env=env)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("2 of 2 images explained")


@pytest.mark.slow
def test_validate_reports_every_config_error_at_once():
    proc = _cli(
        "validate", "--set", "saliency.samples=-1", "--set", "saliency.metods=[x]",
        "--set", "batch.max_batch_size=0", "--set", "output.dir=5",
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 4 and all(line.startswith("error: config key") or "unknown config key"
                                   in line for line in lines)  # fmt: skip
    assert "did you mean 'saliency.methods'" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("command", [["validate", "--check"], ["run", "--dry-run"]])
def test_a_dry_run_checks_everything_and_writes_nothing(tmp_path, command):
    out = tmp_path / "out"
    proc = _cli(*command, "--config", "configs/local.yaml", "--set", f"output.dir={out}")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "model: examples/model/shapes_cnn.keras (input 64x64x3" in text
    assert "inputs: files examples/images/*: 12 images" in text
    assert "  circle_01.jpg" in text and "... and 2 more" in text
    assert "would compute: vanilla, guided, smoothgrad" in text
    assert "Nothing was run or written." in text
    assert not out.exists()


@pytest.mark.slow
def test_version_and_help_name_the_exit_codes_and_beam_flags():
    assert _cli("--version").stdout.strip() == f"saliency-pipeline {__version__}"
    text = _cli("run", "--help").stdout
    assert "exit codes:" in text and "another run holds output.dir" in text
    assert "Every other flag passes through to Apache Beam" in text


def test_a_half_second_batch_duration_is_honoured():
    handler = SaliencyModelHandler(
        model=ModelConfig(name=str(MODEL)),
        saliency=SaliencyConfig(),
        batch=BatchConfig(max_batch_size=8, max_batch_duration_secs=0.5),
        run_id="t",
    )
    assert handler.batch_elements_kwargs()["max_batch_duration_secs"] == 0.5
