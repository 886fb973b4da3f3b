"""Shared test helpers: seeded music-like audio (from pipelines.common.synthetic) and small file writers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import psutil
import soundfile as sf

from pipelines.common.synthetic import music_clip, write_corpus  # noqa: F401  (re-exported for tests)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (tests stay on loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_session(proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """SIGKILL every process in the session ``proc`` leads (``start_new_session=True``) and wait until all are gone.

    Killing the process group alone leaves Ray's raylet and workers running in their own groups for a while; a
    worker could still finish a shard after the "kill", so a test could not tell what the killed run left behind.
    """
    deadline = time.monotonic() + timeout
    while members := _live_session_members(proc.pid):
        for member in members:
            try:
                member.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        if proc.poll() is None:
            proc.wait()
        assert time.monotonic() < deadline, f"processes of session {proc.pid} outlived SIGKILL: {members}"
        time.sleep(0.05)
    proc.wait()


def _live_session_members(session: int) -> list[psutil.Process]:
    members = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == session and p.status() != psutil.STATUS_ZOMBIE:
                members.append(p)
        except (OSError, psutil.Error):
            pass
    return members


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int, **kwargs) -> Path:
    """Write [N, C] audio with soundfile (format from the suffix) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, sample_rate, **kwargs)
    return path


# (suffix, rate, channels, soundfile subtype); soundfile here writes mp3 and opus too.
LAYOUTS = {"a.wav": (24000, 1, "PCM_16"), "sub/b.flac": (44100, 2, "PCM_24"), "sub/deep/c.ogg": (48000, 2, "VORBIS"),
           "d.mp3": (44100, 2, "MPEG_LAYER_III"), "e.opus": (48000, 1, "OPUS"), "f.flac": (8000, 6, "PCM_16"),
           "g.wav": (96000, 1, "FLOAT")}


def write_mixed_folder(root) -> dict[str, tuple[int, int, int]]:
    """Good files of every format (path -> (rate, channels, frames)) plus a corrupt, an empty and a text file."""
    expected = {}
    for i, (rel, (sr, ch, subtype)) in enumerate(LAYOUTS.items()):
        fmt = {"ogg": "OGG", "opus": "OGG", "mp3": "MP3"}.get(rel.rsplit(".", 1)[-1])
        path = write_audio(root / rel, music_clip(1.0 + 0.25 * i, sr, ch, seed=i), sr, subtype=subtype, format=fmt)
        expected[rel] = (sr, ch, sf.info(str(path)).frames)
    (root / "broken.mp3").write_bytes(b"ID3" + b"\x13garbage" * 100)
    (root / "sub" / "empty.flac").write_bytes(b"")
    (root / "notes.txt").write_text("not audio")
    return expected
