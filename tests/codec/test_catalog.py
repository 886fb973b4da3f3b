"""Model catalogue: list_models / get_model over presets, checkpoint folders and the MLflow registry."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import codec
from codec.catalog import format_table
from codec.inference import Codec


def _clip(seconds: float = 1.2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    return 0.3 * torch.randn(int(seconds * 24000), generator=gen)


@pytest.fixture(scope="module")
def tiny() -> Codec:
    return Codec.from_pretrained("tiny").configure(chunk_seconds=1.0, context_seconds=0.4, window_seconds=2.0)


def test_presets_are_listed_with_their_facts():
    models = {m.name: m for m in codec.list_models(local_dirs=[], tracking_uri=None)}
    assert {"tiny", "muq_xcodec"} <= set(models)
    full = models["muq_xcodec"]
    assert (full.source, full.sample_rate, full.frame_rate, full.n_codebooks, full.codebook_size) == (
        "preset", 24000, 25.0, 8, 1024)
    assert full.max_bitrate == 2000 and full.bitrates == [250.0 * k for k in range(1, 9)]
    assert full.weights is False


def test_local_checkpoints_are_listed_and_loaded_by_name(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "models" / "my-codec")
    (tmp_path / "models" / "not-a-model").mkdir()
    local = [m for m in codec.list_models(local_dirs=[tmp_path / "models"]) if m.source == "local"]
    assert [m.name for m in local] == [str(tmp_path / "models" / "my-codec")]
    assert local[0].weights is True
    loaded = codec.get_model("my-codec", local_dirs=[tmp_path / "models"])
    assert isinstance(loaded, Codec)


def test_get_model_gives_identical_codes_for_identical_weights(tiny, tmp_path, mlflow_sqlite):
    from pipelines.common.tracking import RunLogger, default_artifact_location, get_or_create_run

    audio = _clip()
    reference = tiny.encode(audio, 24000)
    preset = codec.get_model("tiny").configure(chunk_seconds=1.0, context_seconds=0.4, window_seconds=2.0)
    assert torch.equal(preset.encode(audio, 24000), reference)

    folder = tiny.save_pretrained(tmp_path / "ckpt")
    from_dir = codec.get_model(folder).configure(chunk_seconds=1.0, context_seconds=0.4, window_seconds=2.0)
    assert torch.equal(from_dir.encode(audio, 24000), reference)

    run_id = get_or_create_run(mlflow_sqlite, "catalog", "register",
                               artifact_location=default_artifact_location(mlflow_sqlite))
    RunLogger(mlflow_sqlite, run_id).log_model_dir(folder, registered_name="catalog-codec", alias="prod")
    listed = [m.name for m in codec.list_models(local_dirs=[], tracking_uri=mlflow_sqlite)]
    assert "models:/catalog-codec@prod" in listed and "models:/catalog-codec@latest" in listed
    registered = codec.get_model("models:/catalog-codec@prod", tracking_uri=mlflow_sqlite)
    registered.configure(chunk_seconds=1.0, context_seconds=0.4, window_seconds=2.0)
    assert torch.equal(registered.encode(audio, 24000), reference)


def test_unknown_name_lists_available_models(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        codec.get_model("no-such-codec", local_dirs=[tmp_path])
    assert "tiny" in str(err.value) and "muq_xcodec" in str(err.value)


@pytest.mark.parametrize("bitrate,n_q", [(250 * k, k) for k in range(1, 9)])
def test_bitrate_selects_layers(tiny, bitrate, n_q):
    codes = tiny.encode(_clip(0.5), 24000, bitrate=bitrate)
    assert codes.shape[1] == n_q


def test_unreachable_bitrate_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match="250"):
        tiny.encode(_clip(0.5), 24000, bitrate=300)


def test_models_command_prints_the_table(capsys):
    from codec.__main__ import main

    assert main(["models", "--local-dirs", ""]) == 0
    out = capsys.readouterr().out
    assert out.strip() == format_table(codec.list_models(local_dirs=[])).strip()
    assert "4: 1000 bps" in out and "muq_xcodec" in out


@pytest.mark.slow
def test_pip_install_into_a_fresh_venv(tmp_path):
    """Build the wheel, install it into a new venv and use it from outside the checkout.

    The new venv sees the already-installed dependencies through a .pth file (the pinned torch, ray, ...
    stack is several GB); the project itself comes only from the wheel, so missing package data, console
    scripts or modules fail here.
    """
    import sysconfig
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(repo)],
                   check=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next(wheels.glob("muq_xcodec-*.whl"))
    subprocess.run([py, "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True)
    check = subprocess.run([py, "-m", "pip", "check"], capture_output=True, text=True)
    assert "muq-xcodec" not in check.stdout.lower(), check.stdout  # every pinned dependency is satisfied

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}
    run = dict(cwd=outside, env=env, capture_output=True, text=True)
    helped = subprocess.run([venv / "bin" / "muq-xcodec", "--help"], **run)
    assert helped.returncode == 0 and "encode" in helped.stdout and "tokenize" in helped.stdout, helped.stderr
    listed = subprocess.run([venv / "bin" / "muq-xcodec", "models"], **run)
    assert listed.returncode == 0 and "tiny" in listed.stdout and "2000" in listed.stdout, listed.stderr
    imported = subprocess.run([py, "-c", "import codec; print(codec.__file__); "
                               "print(sorted(m.name for m in codec.list_models()))"], **run)
    assert imported.returncode == 0, imported.stderr
    location, names = imported.stdout.splitlines()
    assert location.startswith(site) and "'tiny'" in names and "'muq_xcodec'" in names
    encoded = subprocess.run([py, "-c", "import numpy, codec; c = codec.get_model('tiny'); "
                              "print(tuple(c.encode(numpy.zeros(24000, 'float32'), 24000).shape))"], **run)
    assert encoded.returncode == 0 and encoded.stdout.strip() == "(1, 8, 25)", encoded.stderr
