"""Optional external tools of the evaluation: the Opus baseline encoder and ViSQOL.

Both are looked up at run time and reported when absent; nothing here is needed by the codec itself.

* Opus: libsndfile (through soundfile) when it was built with Opus (``OGG``/``OPUS`` subtype), else the
  ``ffmpeg`` binary with libopus. libsndfile has no bitrate setting; its ``compression_level`` in [0, 1]
  maps linearly to 256..6 kbps per channel, so its lowest rate is 6 kbps.
* ViSQOL: ``visqol-python`` (``pip install muq-xcodec[eval]``) in audio mode, which wants 48 kHz input;
  both signals are resampled from the codec rate to 48 kHz first.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch

from codec.audio import resample

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
LIBSNDFILE_KBPS = (6.0, 256.0)  # per channel, at compression_level 1.0 and 0.0
FFMPEG_KBPS = (0.5, 512.0)
VISQOL_RATE = 48000


@dataclass(frozen=True)
class OpusEncoder:
    """An available Opus encoder.

    Attributes:
        backend: "libsndfile" or "ffmpeg".
        min_kbps: the lowest bitrate it supports (mono).
        max_kbps: the highest.
    """

    backend: str
    min_kbps: float
    max_kbps: float

    def roundtrip(self, audio: np.ndarray, sample_rate: int, kbps: float) -> tuple[np.ndarray, int]:
        """Encode mono audio to Ogg Opus at ``kbps`` and decode it back.

        Args:
            audio: float32 [N] mono at ``sample_rate`` (one of :data:`OPUS_RATES`).
            sample_rate: Hz.
            kbps: target bitrate (clamped to the encoder's range).

        Returns:
            (decoded float32 [N] trimmed or zero-padded to N, size of the Ogg file in bytes).
        """
        if sample_rate not in OPUS_RATES:
            raise ValueError(f"Opus takes {OPUS_RATES} Hz, got {sample_rate}")
        kbps = min(max(kbps, self.min_kbps), self.max_kbps)
        x = np.ascontiguousarray(audio, dtype=np.float32)
        if self.backend == "libsndfile":
            level = 1.0 - (kbps - LIBSNDFILE_KBPS[0]) / (LIBSNDFILE_KBPS[1] - LIBSNDFILE_KBPS[0])
            buf = io.BytesIO()
            with sf.SoundFile(buf, "w", sample_rate, 1, format="OGG", subtype="OPUS",
                              compression_level=float(min(max(level, 0.0), 1.0))) as f:
                f.write(x)
            blob = buf.getvalue()
        else:
            blob = _ffmpeg(["-f", "f32le", "-ar", str(sample_rate), "-ac", "1", "-i", "pipe:0", "-c:a", "libopus",
                            "-b:a", f"{kbps * 1000:.0f}", "-f", "ogg", "pipe:1"], x.tobytes())
        decoded = _decode_ogg(blob, sample_rate, self.backend)
        out = np.zeros_like(x)
        n = min(len(out), len(decoded))
        out[:n] = decoded[:n]
        return out, len(blob)


def _ffmpeg(args: list[str], data: bytes) -> bytes:
    proc = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], input=data,
                          capture_output=True, check=False, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {proc.stderr.decode(errors='replace').strip()[:300]}")
    return proc.stdout


def _decode_ogg(blob: bytes, sample_rate: int, backend: str) -> np.ndarray:
    if backend == "libsndfile" or libsndfile_has_opus():
        data, sr = sf.read(io.BytesIO(blob), dtype="float32", always_2d=True)
        x = data.mean(axis=1)
        if sr != sample_rate:
            x = resample(torch.from_numpy(x), sr, sample_rate).numpy()
        return x
    raw = _ffmpeg(["-i", "pipe:0", "-f", "f32le", "-ar", str(sample_rate), "-ac", "1", "pipe:1"], blob)
    return np.frombuffer(raw, dtype=np.float32).copy()


def libsndfile_has_opus() -> bool:
    """True when soundfile's libsndfile can write Ogg Opus."""
    try:
        return "OPUS" in sf.available_subtypes("OGG")
    except Exception:  # noqa: BLE001  (an old libsndfile without OGG)
        return False


def ffmpeg_has_libopus() -> bool:
    """True when an ``ffmpeg`` binary with the libopus encoder is on PATH."""
    if shutil.which("ffmpeg") is None:
        return False
    try:
        out = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return b"libopus" in out.stdout


def find_opus_encoder(preference: str = "auto") -> tuple[OpusEncoder | None, str]:
    """The Opus encoder to use and a sentence saying which (or why none).

    Args:
        preference: "auto" (libsndfile, then ffmpeg), "libsndfile" or "ffmpeg".
    """
    if preference in ("auto", "libsndfile") and libsndfile_has_opus():
        return OpusEncoder("libsndfile", *LIBSNDFILE_KBPS), f"Opus via libsndfile {sf.__libsndfile_version__}"
    if preference in ("auto", "ffmpeg") and ffmpeg_has_libopus():
        return OpusEncoder("ffmpeg", *FFMPEG_KBPS), "Opus via ffmpeg/libopus"
    wanted = {"auto": "libsndfile without Opus support and no ffmpeg with libopus",
              "libsndfile": "libsndfile has no Opus support", "ffmpeg": "no ffmpeg with libopus on PATH"}
    return None, f"Opus baseline skipped: {wanted[preference]}"


def baseline_bitrates(encoder: OpusEncoder, kbps: list[float], include_lowest: bool) -> list[float]:
    """Sorted distinct target bitrates (kbps) within the encoder's range, plus its lowest when asked."""
    rates = {min(max(float(k), encoder.min_kbps), encoder.max_kbps) for k in kbps}
    if include_lowest:
        rates.add(encoder.min_kbps)
    return sorted(rates)


class Visqol:
    """ViSQOL v3 audio mode (MOS-LQO, 1..5, higher is better) through ``visqol-python``."""

    def __init__(self):
        from visqol.api import VisqolApi

        self.api = VisqolApi()
        self.api.create(mode="audio")

    @staticmethod
    def availability() -> tuple[bool, str]:
        """(installed, a sentence for the report)."""
        try:
            import visqol.api  # noqa: F401
        except ImportError:
            return False, "ViSQOL not computed: visqol-python is not installed (pip install 'muq-xcodec[eval]')"
        return True, "ViSQOL v3 audio mode (visqol-python), 48 kHz input"

    def score(self, estimate: np.ndarray, reference: np.ndarray, sample_rate: int) -> float:
        """MOS-LQO of ``estimate`` against ``reference`` (both float [N] at ``sample_rate``)."""
        ref = resample(torch.from_numpy(np.ascontiguousarray(reference, np.float32)), sample_rate, VISQOL_RATE)
        est = resample(torch.from_numpy(np.ascontiguousarray(estimate, np.float32)), sample_rate, VISQOL_RATE)
        result = self.api.measure_from_arrays(ref.double().numpy(), est.double().numpy(), VISQOL_RATE)
        return float(result.moslqo)
