"""``python -m codec``: encode/decode round trips, help from docstrings, one-line errors with exit code 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from utils import music_clip, write_audio

from codec.__main__ import COMMANDS, build_parser, main
from codec.codefile import FORMAT_VERSION, CodeFile

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "codec", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)


def test_wav_round_trip_in_process(tmp_path, capsys):
    wav = write_audio(tmp_path / "clip.wav", music_clip(1.3), 24000)
    assert main(["encode", str(wav), str(tmp_path / "clip.npz"), "--n-q", "4"]) == 0
    code_file = CodeFile.load(tmp_path / "clip.npz")
    assert code_file.codes.shape == (4, 33) and code_file.codes.dtype == np.int16
    assert (code_file.n_q, code_file.version, code_file.model) == (4, FORMAT_VERSION, "tiny")
    assert (code_file.original_length, code_file.original_sample_rate, code_file.sample_rate) == (31200, 24000, 24000)
    assert code_file.frame_rate == 25.0
    assert main(["decode", str(tmp_path / "clip.npz"), str(tmp_path / "out.wav")]) == 0
    audio, rate = sf.read(tmp_path / "out.wav", always_2d=True)
    assert rate == 24000 and audio.shape == (31200, 1)
    assert "wrote" in capsys.readouterr().out


def test_stereo_flac_44k_round_trip_subprocess(tmp_path):
    flac = write_audio(tmp_path / "stereo.flac", music_clip(1.1, sample_rate=44100, channels=2), 44100)
    result = run_cli("encode", flac, tmp_path / "stereo.npz", "--bitrate", "1000")
    assert result.returncode == 0, result.stderr
    code_file = CodeFile.load(tmp_path / "stereo.npz")
    assert code_file.codes.shape == (4, 28)  # ceil(ceil(48510 * 24000 / 44100) / 960) = ceil(26400 / 960)
    assert (code_file.original_sample_rate, code_file.original_channels, code_file.original_length) == (44100, 2, 48510)
    result = run_cli("decode", tmp_path / "stereo.npz", tmp_path / "back.flac")
    assert result.returncode == 0, result.stderr
    info = sf.info(tmp_path / "back.flac")
    assert (info.samplerate, info.channels, info.frames) == (44100, 1, 48510)  # original rate and length, mono


def test_corrupt_and_missing_files_fail_with_one_line(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    for args in (("encode", corrupt, tmp_path / "x.npz"), ("encode", tmp_path / "missing.flac", tmp_path / "x.npz"),
                 ("decode", corrupt, tmp_path / "x.wav")):
        result = run_cli(*args)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert Path(args[1]).name in lines[0]
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.npz").exists()


def test_bad_bitrate_is_a_user_error(tmp_path, capsys):
    wav = write_audio(tmp_path / "clip.wav", music_clip(0.5), 24000)
    assert main(["encode", str(wav), str(tmp_path / "x.npz"), "--bitrate", "300"]) == 1
    assert "valid bitrates" in capsys.readouterr().err


def test_help_comes_from_signature_and_docstring(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["encode", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "Encode an audio file into a code file" in text
    for option in ("--n-q", "--bitrate", "--model", "--device", "input", "output"):
        assert option in text
    assert "averaged to mono" in text  # per-argument help from the Args: section


def test_lazy_commands_are_imported_only_when_selected():
    commands = {"encode": COMMANDS["encode"], "later": "no_such_module_for_tests:run"}
    parser = build_parser(commands)  # listing does not import the lazy command
    assert parser.parse_args(["encode", "a.wav", "b.npz"]).n_q is None
    with pytest.raises(ModuleNotFoundError):
        build_parser(commands, selected="later")


def test_importing_the_package_is_light():
    code = ("import sys, codec, codec.__main__; heavy = [m for m in ('muq', 'transformers', 'mlflow', 'omegaconf', "
            "'ray') if m in sys.modules]; print(heavy); assert codec.__all__ == ['Codec', 'get_model', 'list_models', 'load_codec_config', 'tune_malloc']; "
            "assert not heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stdout + result.stderr


def test_code_file_round_trip_and_version_check(tmp_path):
    codes = np.random.default_rng(0).integers(0, 1024, size=(3, 10)).astype(np.int16)
    cf = CodeFile(codes=codes, sample_rate=24000, frame_rate=25.0, codebook_size=1024, original_length=9000,
                  original_sample_rate=22050, original_channels=2, model="tiny")
    path = cf.save(tmp_path / "codes")  # suffix added
    assert path.name == "codes.npz"
    with np.load(path, allow_pickle=False) as data:  # no pickled objects inside
        assert set(data.files) == {"codes", "metadata"}
    loaded = CodeFile.load(path)
    assert np.array_equal(loaded.codes, codes) and loaded == CodeFile(**{**vars(cf), "codes": loaded.codes})
    assert loaded.duration == pytest.approx(9000 / 22050)
    future = CodeFile(**{**vars(cf), "version": FORMAT_VERSION + 1}).save(tmp_path / "future.npz")
    with pytest.raises(ValueError, match="version"):
        CodeFile.load(future)


def test_argument_errors_are_reported_before_torch_or_a_model_loads(tmp_path):
    """Bad arguments fail in a process that never imports torch, so no model can have been loaded."""
    wav = write_audio(tmp_path / "clip.wav", music_clip(0.5), 24000)
    (tmp_path / "dir.wav").mkdir()
    os.mkfifo(tmp_path / "pipe.wav")  # opening it would block: the check must not open it
    (tmp_path / "loop.wav").symlink_to(tmp_path / "loop.wav")
    (tmp_path / "broken.wav").symlink_to(tmp_path / "nowhere.wav")
    tag = b"TIT2" + (6).to_bytes(4, "big") + b"\0\0\x03title"
    (tmp_path / "tag.mp3").write_bytes(b"ID3\x04\0\0\0\0\0" + bytes([len(tag)]) + tag)  # an ID3 tag, no frames
    codes = CodeFile(codes=np.zeros((8, 13), np.int16), sample_rate=24000, frame_rate=25.0, codebook_size=1024,
                     original_length=12000, original_sample_rate=24000, original_channels=1,
                     model="tiny").save(tmp_path / "codes.npz")
    cases = {
        "valid bitrates (bps): 250, 500": ["encode", wav, tmp_path / "x.npz", "--bitrate", "999"],
        "n_q must be in 1..8, got 9": ["encode", wav, tmp_path / "x.npz", "--n-q", "9"],
        "disagree": ["encode", wav, tmp_path / "x.npz", "--n-q", "2", "--bitrate", "1000"],
        "no such file": ["encode", tmp_path / "missing.wav", tmp_path / "x.npz"],
        "is a directory, not an audio file": ["encode", tmp_path / "dir.wav", tmp_path / "x.npz"],
        "is a directory, not a code file": ["decode", tmp_path / "dir.wav", tmp_path / "x.wav"],
        "pipe.wav is a FIFO (named pipe), not an audio file": ["encode", tmp_path / "pipe.wav", tmp_path / "x.npz"],
        "loop.wav is a symlink loop, not an audio file": ["encode", tmp_path / "loop.wav", tmp_path / "x.npz"],
        "broken.wav is a broken symlink, not an audio file": ["encode", tmp_path / "broken.wav", tmp_path / "x.npz"],
        "tag.mp3: only an ID3 tag (26 bytes), no audio frames": ["encode", tmp_path / "tag.mp3", tmp_path / "x.npz"],
        "MP3 output is not supported": ["decode", codes, tmp_path / "x.mp3"],
        "unknown audio format '.xyz'": ["decode", codes, tmp_path / "x.xyz"],
    }
    script = ("import json, sys; from codec.__main__ import main\n"
              f"cases = {json.dumps({k: [str(a) for a in v] for k, v in cases.items()})}\n"
              "codes = {k: main(v) for k, v in cases.items()}\n"
              "print(json.dumps(codes)); assert 'torch' not in sys.modules, 'torch was imported'\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == dict.fromkeys(cases, 1)
    errors = result.stderr.strip().splitlines()
    assert len(errors) == len(cases) and all(e.startswith("error: ") for e in errors)
    for expected, line in zip(cases, errors, strict=True):
        assert expected in line, (expected, line)
    assert not list(tmp_path.glob("x.*"))


def test_checkpoint_directory_layers_are_checked_before_loading(tmp_path, monkeypatch, capsys):
    from codec.checkpoint import CONFIG_FILE
    from codec.inference import Codec
    from codec.preflight import CHECKPOINT_CONFIG

    assert CHECKPOINT_CONFIG == CONFIG_FILE
    Codec.from_pretrained("tiny").save_pretrained(tmp_path / "ckpt")
    wav = write_audio(tmp_path / "clip.wav", music_clip(0.5), 24000)

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(Codec, "from_pretrained", no_loading)
    assert main(["encode", str(wav), str(tmp_path / "x.npz"), "--n-q", "9", "--model", str(tmp_path / "ckpt")]) == 1
    assert "n_q must be in 1..8" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
def test_decoded_files_keep_the_exact_length(tmp_path, suffix):
    wav = write_audio(tmp_path / "clip.wav", music_clip(0.455, sample_rate=44100), 44100)
    assert main(["encode", str(wav), str(tmp_path / "clip.npz")]) == 0
    assert main(["decode", str(tmp_path / "clip.npz"), str(tmp_path / f"out{suffix}")]) == 0
    info = sf.info(tmp_path / f"out{suffix}")
    assert (info.frames, info.samplerate) == (sf.info(wav).frames, 44100)
