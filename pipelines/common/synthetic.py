"""Synthetic music-like audio for smoke configs, demos and tests (no downloads needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

_CHORDS = (  # MIDI notes: C major, A minor, F major, G major
    (60, 64, 67),
    (57, 60, 64),
    (53, 57, 60),
    (55, 59, 62),
)


def _midi_hz(note: int) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12.0)


def music_clip(seconds: float, sample_rate: int = 24000, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A seeded music-like clip: a chord progression with harmonics, a bass line and drums.

    Args:
        seconds: duration.
        sample_rate: output rate in Hz.
        channels: number of channels; each gets a slightly different mix.
        seed: RNG seed (chord order, drum noise, detuning).

    Returns:
        float32 array [N, channels] in [-1, 1].
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    bar = 0.5 + 0.25 * rng.random()  # seconds per chord
    order = rng.permutation(len(_CHORDS))
    detune = 1.0 + 0.01 * rng.standard_normal()
    out = np.zeros((n, channels), dtype=np.float64)
    chord_idx = (t // bar).astype(int)
    phase_in_bar = (t % bar) / bar
    env = np.exp(-3.0 * phase_in_bar)
    for voice in range(3):
        notes = np.array([_CHORDS[order[i % len(order)]][voice] for i in range(chord_idx.max() + 1)])
        freq = np.vectorize(_midi_hz)(notes[chord_idx]) * detune
        phase = 2 * np.pi * np.cumsum(freq) / sample_rate
        tone = sum(np.sin(h * phase) / h for h in (1, 2, 3, 4))
        for c in range(channels):
            pan = 0.6 + 0.4 * np.cos(voice + c)
            out[:, c] += 0.12 * pan * env * tone
    bass_notes = np.array([_CHORDS[order[i % len(order)]][0] - 24 for i in range(chord_idx.max() + 1)])
    bass_phase = 2 * np.pi * np.cumsum(np.vectorize(_midi_hz)(bass_notes[chord_idx])) / sample_rate
    out += 0.15 * np.sin(bass_phase)[:, None]
    beat = bar / 2
    beat_phase = (t % beat) / beat
    kick = np.sin(2 * np.pi * 60 * t * (1 + np.exp(-30 * beat_phase))) * np.exp(-25 * beat_phase)
    hat_phase = ((t + beat / 2) % beat) / beat
    hat = rng.standard_normal(n) * np.exp(-80 * hat_phase)
    out += (0.3 * kick + 0.05 * hat)[:, None]
    out /= max(1.0, np.abs(out).max() / 0.9)
    return out.astype(np.float32)


def write_corpus(root: str | Path, num_tracks: int = 8, seconds: tuple[float, float] = (4.0, 12.0),
                 seed: int = 0) -> list[Path]:
    """Write a small corpus of music-like tracks with mixed formats, rates and channel counts.

    Args:
        root: output folder (created).
        num_tracks: how many tracks.
        seconds: (min, max) duration of a track.
        seed: RNG seed; the same seed writes the same files.

    Returns:
        The written paths, sorted.
    """
    rng = np.random.default_rng(seed)
    layouts = [("flac", 44100, 2), ("wav", 24000, 1), ("ogg", 48000, 2), ("flac", 22050, 1)]
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(num_tracks):
        fmt, rate, channels = layouts[i % len(layouts)]
        duration = float(rng.uniform(*seconds))
        path = root / f"track_{i:04d}.{fmt}"
        sf.write(str(path), music_clip(duration, rate, channels, seed=seed * 1000 + i), rate)
        paths.append(path)
    return sorted(paths)
