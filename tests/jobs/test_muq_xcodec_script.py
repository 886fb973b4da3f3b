"""The ``muq-xcodec`` script (``jobs/__main__.py``): every codec command and every job behind one name; the
codec's own CLI knows only codec commands; old config key names fail naming the new key."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jobs.__main__ import JOBS, main


def test_job_subcommands_dispatch_to_the_jobs():
    for job in ("prepare", "train", "tokenize", "evaluate"):
        result = subprocess.run([sys.executable, "-m", "jobs", job, "--help"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert f"python -m jobs.{job}" in result.stdout and "overrides" in result.stdout


def test_help_lists_codec_commands_and_jobs(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "encode" in out and "models" in out and all(f"python -m jobs.{job}" in out for job in JOBS)


def test_codec_cli_has_no_jobs():
    result = subprocess.run([sys.executable, "-m", "codec", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "encode" in result.stdout and "jobs." not in result.stdout
    result = subprocess.run([sys.executable, "-m", "codec", "tokenize"], capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice" in result.stderr


@pytest.mark.parametrize("job,override,new_key", [
    ("train", "mlflow.tracking_uri=sqlite:///x.db", "tracking.uri"),
    ("train", "mlflow.experiment=x", "tracking"),
    ("tokenize", "tracking.tracking_uri=sqlite:///x.db", "tracking.uri"),
    ("evaluate", "tracking.tracking_uri=sqlite:///x.db", "tracking.uri"),
])
def test_old_key_names_fail_naming_the_new_key(job, override, new_key, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([job, "model=tiny", "input=a", "output=b", "shards=a", override]
                if job != "train" else [job, override]) == 2
    err = capsys.readouterr().err
    assert f"renamed: use {new_key}" in err, err
    assert not (tmp_path / "x.db").exists()
