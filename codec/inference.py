"""``Codec``: the inference API (XCodec generator + frozen MuQ teacher + config).

Encoding is computed on a FIXED ABSOLUTE chunk grid so that codes do not depend on how a track is split
or batched (MuQ attends globally over its input): chunk ``k`` covers frames ``[k*C, (k+1)*C)`` and is
computed from the audio span ``[k*C*hop - ctx, (k+1)*C*hop + ctx)``, keeping only its centre ``C`` frames;
``window_seconds`` only sets how many chunks share one forward pass. Only MuQ needs those windows (it
attends globally, so what its window holds is part of the codes): ``inference.teacher_window: padded``
gives it the full window with zeros outside the track, ``trimmed`` the window clipped to the track (a 3 s
track costs MuQ 3 s, not 14 s). The acoustic encoder is convolutional, so it runs once over each span of
consecutive chunks with just its receptive field of context (a fraction of a second), giving the same codes
as running it on every padded window. Decoding uses the same grid with code-frame context on each side
(or, ``decode: per_chunk``, none).

Input conventions: ``[N]`` mono, ``[C, N]`` one track channels first, ``[B, C, N]`` a batch (optionally
padded, with ``lengths``), or a list of ``[N]``/``[C, N]`` tracks; numpy or torch, any sample rate
(resampled to 24 kHz with torchaudio) and any channel count (downmixed by averaging the channels; the
``reference`` inference mode keeps the first channel, as the original muq-xcodec does).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from codec.audio import as_track_list, read_audio, resample, to_mono, write_audio
from codec.builders import build_generator, build_teacher
from codec.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    TEACHER_FILE,
    is_mlflow_uri,
    load_weights,
    resolve_checkpoint_dir,
    save_weights,
    write_config,
)
from codec.codefile import CodeFile
from codec.config import config_to_yaml, list_presets, load_codec_config
from codec.preflight import PRESET_ALIASES, bitrate_per_layer, check_output_audio, resolve_n_q

if TYPE_CHECKING:
    from codec.model.teacher import MuQTeacher
    from codec.model.xcodec import XCodec

PAD_CODE = -1  # frames past the end of a shorter track in a batch
TEACHER_MIN_FRAMES = 2  # MuQ's mel STFT (n_fft 2048) reflect-pads 1024 samples: it needs more input than that


class Codec(nn.Module):
    """Semantic music codec for inference.

    Args:
        generator: the XCodec generator.
        config: the codec config (``load_codec_config``) the generator was built from.
        teacher: the frozen MuQ teacher; when None it is built on first :meth:`encode` (decode never needs it).
        name: model id recorded in code files (preset name, checkpoint dir or MLflow URI).
        teacher_weights: safetensors file to load into a lazily built teacher (random / imported teachers).
    """

    def __init__(self, generator: XCodec, config: Any, teacher: MuQTeacher | None = None, name: str = "",
                 teacher_weights: str | Path | None = None):
        super().__init__()
        self.generator = generator.eval()
        self.teacher = teacher
        self.config = config
        self.name = name or str(config.name)
        self._teacher_weights = None if teacher_weights is None else Path(teacher_weights)
        self._encoder_context: tuple[int, int] | None = None  # frames before/after; computed on first encode
        self.eval()

    # ----------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "tiny", overrides: list[str] | dict | None = None,
                        device: str | torch.device = "cpu", revision: str | None = None,
                        tracking_uri: str | None = None) -> Codec:
        """Load a codec.

        Args:
            name_or_path: a checkpoint directory (``save_pretrained`` layout); an MLflow URI
                (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN_ID/PATH``); a Hugging Face Hub
                id (``ORG/NAME``, ``hf://ORG/NAME@REVISION``; cached, honours ``HF_HUB_OFFLINE``; how it is told
                apart from a directory or preset: :mod:`codec.hub`); or a preset name (``"tiny"``/``"debug"``,
                ``"muq_xcodec"``) giving seeded random weights.
            overrides: config overrides, e.g. ``["inference.window_seconds=10"]`` (inference settings only
                make sense here; geometry must match the weights).
            device: where to put the model.
            revision: Hub branch, tag or commit (Hub ids only).
            tracking_uri: MLflow store of an MLflow URI (default: ``$MLFLOW_TRACKING_URI``, else ./mlflow.db).
        """
        from codec.hub import download, parse_hub_ref

        name = str(name_or_path)
        hub = parse_hub_ref(name_or_path, revision)
        if revision is not None and hub is None:
            raise ValueError(f"revision={revision!r} applies to Hugging Face Hub ids only, not to {name!r}")
        if hub is not None:  # recorded pinned to the commit: code files name exactly these weights
            snapshot, pinned = download(hub)
            name_or_path, name = snapshot, str(pinned)
        if hub is not None or Path(name).is_dir() or is_mlflow_uri(name):
            directory = resolve_checkpoint_dir(name_or_path, tracking_uri=tracking_uri)
            cfg = load_codec_config(directory / CONFIG_FILE, overrides)
            generator = load_weights(build_generator(cfg), directory / MODEL_FILE)
            teacher_file = directory / TEACHER_FILE
            if hub is None and not is_mlflow_uri(name):  # code files record where the model is; keep that usable
                name = str(directory.resolve())
            codec = cls(generator, cfg, name=name, teacher_weights=teacher_file if teacher_file.is_file() else None)
        else:
            preset = PRESET_ALIASES.get(name, name)
            if preset not in list_presets():
                raise FileNotFoundError(f"{name!r} is not a checkpoint directory, an MLflow URI (models:/, runs:/), "
                                        "a Hugging Face id (ORG/NAME, hf://ORG/NAME@REVISION) "
                                        f"or a preset ({', '.join(sorted([*list_presets(), *PRESET_ALIASES]))})")
            cfg = load_codec_config(preset, overrides)
            codec = cls(build_generator(cfg), cfg, name=name)
        return codec.to(device)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``model.safetensors``, ``config.yaml`` and, unless the teacher is a published model,
        ``teacher.safetensors``. Returns the directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_weights(self.generator, directory / MODEL_FILE)
        write_config(directory, config_to_yaml(self.config))
        if self.config.teacher.source != "pretrained":
            save_weights(self.get_teacher().muq, directory / TEACHER_FILE)
        return directory

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> Any:
        """Publish this codec on the Hugging Face Hub with a generated model card (:func:`codec.publish.push_to_hub`;
        ``kwargs``: ``revision``, ``private``, ``token``, ``commit_message``, ``training_data``, ``eval_json``).
        Returns the ``huggingface_hub.CommitInfo``."""
        import tempfile

        from codec.publish import push_to_hub

        with tempfile.TemporaryDirectory() as tmp:
            return push_to_hub(self.save_pretrained(tmp), repo_id, **kwargs)

    def get_teacher(self) -> MuQTeacher:
        """The frozen teacher, built (and its stored weights loaded) on first use."""
        if self.teacher is None:
            if self.config.teacher.source == "imported" and self._teacher_weights is None:
                raise FileNotFoundError(f"{self.name}: an imported teacher needs its {TEACHER_FILE} beside the weights")
            self.teacher = build_teacher(self.config, self._teacher_weights).to(self.device)
        return self.teacher

    def configure(self, **inference: Any) -> Codec:
        """Change inference settings (``chunk_seconds``, ``context_seconds``, ``window_seconds``, ``mode``,
        ``teacher_window``, ``decode``, ``compile``), validated like the config. Returns self."""
        self.config = load_codec_config(self.config, {"inference": inference})
        return self

    # ------------------------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @property
    def sample_rate(self) -> int:
        """Codec audio rate (Hz)."""
        return int(self.generator.sample_rate)

    @property
    def hop_length(self) -> int:
        """Samples per code frame."""
        return int(self.generator.hop_length)

    @property
    def frame_rate(self) -> float:
        """Code frames per second."""
        return self.sample_rate / self.hop_length

    @property
    def n_codebooks(self) -> int:
        """RVQ layers available."""
        return int(self.generator.n_codebooks)

    @property
    def codebook_size(self) -> int:
        return int(self.generator.codebook_size)

    @property
    def bitrate_per_layer(self) -> float:
        """Bits per second carried by one RVQ layer (250 for 25 frames/s x 1024 codes)."""
        return bitrate_per_layer(self.frame_rate, self.codebook_size)

    @property
    def bitrates(self) -> list[float]:
        """Available bitrates in bps (one per number of layers)."""
        return [k * self.bitrate_per_layer for k in range(1, self.n_codebooks + 1)]

    def num_frames(self, num_samples: int, sample_rate: int | None = None) -> int:
        """Code frames for a track of ``num_samples`` at ``sample_rate`` (default the codec rate)."""
        if sample_rate is not None and sample_rate != self.sample_rate:
            num_samples = math.ceil(num_samples * self.sample_rate / sample_rate)
        return math.ceil(num_samples / self.hop_length)

    def resolve_n_q(self, n_q: int | None = None, bitrate: float | None = None) -> int:
        """Number of RVQ layers for ``n_q`` or ``bitrate`` (bps); all layers when both are None.

        Raises:
            ValueError: out of range, unreachable bitrate, or ``n_q`` and ``bitrate`` disagree.
        """
        return resolve_n_q(n_q, bitrate, self.n_codebooks, self.bitrate_per_layer)

    # -------------------------------------------------------------------------------------- windowing
    def _grid(self) -> tuple[int, int, int]:
        """(chunk frames C, context frames per side, chunks per forward pass)."""
        inf = self.config.inference
        chunk = round(inf.chunk_seconds * self.frame_rate)
        context = 0 if inf.mode == "reference" else round(inf.context_seconds * self.frame_rate)
        per_batch = max(1, int(inf.window_seconds // inf.chunk_seconds))
        return chunk, context, per_batch

    def _span(self, track: Tensor, start: int, stop: int) -> Tensor:
        """Audio [(stop - start) * hop] of frames ``[start, stop)`` of ``track`` [N], zeros outside it."""
        hop = self.hop_length
        piece = track[max(start * hop, 0):min(stop * hop, track.shape[-1])]
        left = max(0, -start * hop)
        return nn.functional.pad(piece, (left, (stop - start) * hop - left - piece.shape[-1]))

    def _window(self, track: Tensor, k: int, chunk: int, context: int, trim: bool = False) -> Tensor:
        """Audio [W] of chunk k with context, zero-padded outside ``track`` [N].

        ``trim`` (reference mode) ends the window at the track's end padded to a whole frame, as the original
        muq-xcodec inference does for its last chunk, instead of padding it to a full chunk.
        """
        stop = (k + 1) * chunk + context
        if trim:
            stop = min(stop, self.num_frames(track.shape[-1]))
        return self._span(track, k * chunk - context, stop)

    def _trimmed_window(self, frames: int, k: int) -> tuple[int, int]:
        """Frames ``[lo, hi)`` MuQ sees for chunk k of a track of ``frames`` frames (``teacher_window: trimmed``).

        The chunk plus its context, clipped to the track (padded to whole frames). A window shorter than MuQ's
        minimum (:data:`TEACHER_MIN_FRAMES`: a last chunk without context) reaches further back into the
        track; only a track shorter than that minimum is followed by zeros.
        """
        chunk, context, _ = self._grid()
        hi = min(frames, (k + 1) * chunk + context)
        lo = max(0, min(k * chunk - context, hi - TEACHER_MIN_FRAMES))
        return lo, max(hi, lo + TEACHER_MIN_FRAMES)

    def encoder_context(self) -> tuple[int, int]:
        """Code frames of context (before, after) a span that make the acoustic encoder's output on it equal its
        output on the whole zero-padded track: the receptive field's reach on each side in whole frames.

        Output frame ``t`` reads input samples ``[t * hop - left, t * hop + right]`` (:func:`conv_reach`), so
        the first kept frame needs ``left`` samples before it and the last one ``right - hop + 1`` after its
        own hop (6 frames each side for the shipped encoder, whose reach is 5037 / 5996 samples)."""
        if self._encoder_context is None:
            left, right = conv_reach(self.generator.encoder)
            hop = self.hop_length
            self._encoder_context = (math.ceil(left / hop), max(0, math.ceil((right + 1) / hop) - 1))
        return self._encoder_context

    def _compile(self) -> None:
        """With ``inference.compile``, compile the acoustic encoder once (dynamic shapes: any track length)."""
        if self.config.inference.compile and not getattr(self.generator.encoder, "_compiled_call_impl", None):
            self.generator.encoder.compile(dynamic=True)

    # ------------------------------------------------------------------------------------ encode/decode
    @torch.inference_mode()
    def encode(self, audio: Tensor | np.ndarray | list, sample_rate: int, n_q: int | None = None,
               bitrate: float | None = None, lengths: Tensor | np.ndarray | list[int] | None = None) -> Tensor:
        """Audio -> codes.

        Args:
            audio: [N], [C, N] (channels first), [B, C, N], or a list of [N]/[C, N] tracks; numpy or torch.
                Channels are averaged to mono; audio is resampled to 24 kHz.
            sample_rate: rate of ``audio`` in Hz.
            n_q: RVQ layers to return (default all).
            bitrate: alternative to ``n_q`` in bps (multiples of :attr:`bitrate_per_layer`).
            lengths: valid samples per item of a padded [B, C, N] batch.

        Returns:
            Tensor: int16 [B, n_q, T] on the CPU, T = ceil(N_24k / hop) of the longest track. Frames past the
            end of a shorter track hold ``-1``; each track's codes equal encoding it alone.
        """
        n_q = self.resolve_n_q(n_q, bitrate)
        reference = self.config.inference.mode == "reference"
        downmix = (lambda t: t[0]) if reference else to_mono  # the original inference keeps the first channel
        tracks = [resample(downmix(t), sample_rate, self.sample_rate) for t in as_track_list(audio, lengths)]
        frames = [self.num_frames(t.shape[-1]) for t in tracks]
        codes = torch.full((len(tracks), n_q, max(frames, default=0)), PAD_CODE, dtype=torch.int16)
        if any(frames):
            self._compile()
            # the span encoder reproduces the padded windows only when their context covers the encoder's reach
            padded = self.config.inference.teacher_window == "padded"
            literal = reference or (padded and self._grid()[1] < max(self.encoder_context()))
            (self.encode_windows if literal else self._encode_spans)(tracks, frames, n_q, codes)
        return codes

    def _jobs(self, frames: list[int]) -> list[list[tuple[int, int]]]:
        """(track, chunk) pairs of the grid, in groups of one forward pass each."""
        chunk, _, per_batch = self._grid()
        jobs = [(i, k) for i, f in enumerate(frames) for k in range(math.ceil(f / chunk))]
        return [jobs[j:j + per_batch] for j in range(0, len(jobs), per_batch)]

    def encode_windows(self, tracks: list[Tensor], frames: list[int], n_q: int, out: Tensor) -> None:
        """The chunk grid computed literally: teacher AND acoustic encoder on every chunk's window.

        Reference mode's path (its windows have no context, so the encoder's edges matter). In default mode it
        always uses padded windows (``teacher_window`` is ignored) and defines the codes that :meth:`encode`
        reproduces with ``teacher_window: padded`` (the tests compare the two).

        Args:
            tracks: mono 24 kHz tracks [N_i].
            frames: code frames of each track.
            n_q: RVQ layers.
            out: int16 [B, n_q, T] filled in place (frames past a track's end are left untouched).
        """
        chunk, context, _ = self._grid()
        trim = self.config.inference.mode == "reference"
        teacher = self.get_teacher()
        for batch in self._jobs(frames):
            windows = [self._window(tracks[i], k, chunk, context, trim=trim) for i, k in batch]
            for length in dict.fromkeys(w.shape[-1] for w in windows):  # reference mode: last chunks are shorter
                group = [n for n, w in enumerate(windows) if w.shape[-1] == length]
                x = torch.stack([windows[n] for n in group]).to(self.device)[:, None]  # [b, 1, W]
                codes = self.generator.encode(x, teacher(x), n_q)[:, :n_q, context:context + chunk].cpu()
                for n, c in zip(group, codes, strict=True):
                    i, k = batch[n]
                    stop = min((k + 1) * chunk, frames[i])
                    out[i, :, k * chunk:stop] = c[:, :stop - k * chunk].to(torch.int16)

    def _encode_spans(self, tracks: list[Tensor], frames: list[int], n_q: int, out: Tensor) -> None:
        """Default mode: the teacher on the grid's windows (:meth:`_chunk_features`), the acoustic encoder once per
        span of consecutive chunks of a track (ending at the track's end) with :meth:`encoder_context` frames of
        context.

        The fused latent is per frame (concat -> linear -> RVQ), so the encoder's features of a span, next to the
        teacher's features of the same frames, give the codes of :meth:`encode_windows` (with ``teacher_window:
        padded``; ``trimmed`` gives the teacher other windows). Arguments as there.
        """
        chunk = self._grid()[0]
        before, after = self.encoder_context()
        for batch in self._jobs(frames):
            features = self._chunk_features(tracks, frames, batch)  # [b, C, Ds]
            spans = []  # (track, first frame, stop frame, teacher features [stop - first, Ds])
            for i, items in itertools.groupby(range(len(batch)), key=lambda n: batch[n][0]):
                items = list(items)
                start, stop = batch[items[0]][1] * chunk, min((batch[items[-1]][1] + 1) * chunk, frames[i])
                spans.append((i, start, stop, features[items].flatten(0, 1)[:stop - start]))
            for length in dict.fromkeys(stop - start for _, start, stop, _ in spans):
                group = [s for s in spans if s[2] - s[1] == length]
                audio = torch.stack([self._span(tracks[i], a - before, b + after) for i, a, b, _ in group])
                semantic = nn.functional.pad(torch.stack([f for *_, f in group]), (0, 0, before, after))
                codes = self.generator.encode(audio.to(self.device)[:, None], semantic, n_q)
                for (i, start, stop, _), c in zip(group, codes[:, :n_q, before:before + length].cpu(), strict=True):
                    out[i, :, start:stop] = c.to(torch.int16)

    def _chunk_features(self, tracks: list[Tensor], frames: list[int], batch: list[tuple[int, int]]) -> Tensor:
        """Teacher features [b, C, Ds] of the (track, chunk) pairs of one forward pass.

        ``padded``: every window has the same length and runs in one batch. ``trimmed``
        (:meth:`_trimmed_window`): windows of equal length run in one batch, others apart, never padded to a
        common length. Rows past a track's end are unspecified (the caller drops them).
        """
        chunk, context, _ = self._grid()
        teacher = self.get_teacher()
        if self.config.inference.teacher_window == "padded":
            x = torch.stack([self._window(tracks[i], k, chunk, context) for i, k in batch]).to(self.device)
            return teacher(x)[:, context:context + chunk]
        windows = [self._trimmed_window(frames[i], k) for i, k in batch]
        features = None
        for length in dict.fromkeys(hi - lo for lo, hi in windows):
            group = [n for n, (lo, hi) in enumerate(windows) if hi - lo == length]
            x = torch.stack([self._span(tracks[batch[n][0]], *windows[n]) for n in group]).to(self.device)
            out = teacher(x)  # [g, length, Ds]
            if features is None:
                features = out.new_zeros(len(batch), chunk, out.shape[-1])
            for n, f in zip(group, out, strict=True):
                start = batch[n][1] * chunk - windows[n][0]
                kept = f[start:start + chunk]
                features[n, :len(kept)] = kept
        return features

    @torch.inference_mode()
    def decode(self, codes: Tensor | np.ndarray, n_q: int | None = None) -> Tensor:
        """Codes -> 24 kHz audio (no teacher needed).

        Chunk ``k`` of the grid is decoded from its codes plus ``context_seconds`` of codes either side
        (``inference.decode: context``, close to decoding the whole sequence at once) or from its own codes only
        (``per_chunk``: the original muq-xcodec's chunked reconstruction).

        Args:
            codes: [B, K, T] or [K, T] integer codes (K <= n_codebooks), numpy or torch.
            n_q: use only the first ``n_q`` layers (default all of K).

        Returns:
            Tensor: float32 [B, 1, T * hop_length] on the CPU.
        """
        c = torch.as_tensor(np.asarray(codes) if isinstance(codes, np.ndarray) else codes).long()
        if c.dim() == 2:
            c = c[None]
        if c.dim() != 3 or not 1 <= c.shape[1] <= self.n_codebooks:
            raise ValueError(f"codes must be [B, K, T] with 1 <= K <= {self.n_codebooks}, got {tuple(c.shape)}")
        if n_q is not None:
            if not 1 <= n_q <= c.shape[1]:
                raise ValueError(f"n_q must be in 1..{c.shape[1]}, got {n_q}")
            c = c[:, :n_q]
        if c.numel() and (c.min() < 0 or c.max() >= self.codebook_size):
            raise ValueError(f"codes must be in [0, {self.codebook_size}) (trim batch padding {PAD_CODE} "
                             f"with num_frames()), got [{int(c.min())}, {int(c.max())}]")
        inf = self.config.inference
        chunk = self._grid()[0]
        context = 0 if inf.decode == "per_chunk" else round(inf.context_seconds * self.frame_rate)
        hop, total = self.hop_length, c.shape[-1]
        pieces = []
        for k in range(math.ceil(total / chunk)):
            lo, hi = max(0, k * chunk - context), min(total, (k + 1) * chunk + context)
            audio = self.generator.decode(c[:, :, lo:hi].to(self.device)).cpu()
            start = (k * chunk - lo) * hop
            pieces.append(audio[..., start:start + (min(total, (k + 1) * chunk) - k * chunk) * hop])
        if not pieces:
            return torch.zeros(c.shape[0], 1, 0)
        return torch.cat(pieces, dim=-1).float()

    # ----------------------------------------------------------------------------------------- files
    def encode_file(self, path: str | Path, n_q: int | None = None, bitrate: float | None = None) -> CodeFile:
        """Read an audio file (any rate / channels; downmixed to mono) and encode it into a :class:`CodeFile`."""
        audio, sample_rate = read_audio(path)
        codes = self.encode(audio, sample_rate, n_q=n_q, bitrate=bitrate)[0]
        return CodeFile(codes=codes.numpy(), sample_rate=self.sample_rate, frame_rate=self.frame_rate,
                        codebook_size=self.codebook_size, original_length=int(audio.shape[-1]),
                        original_sample_rate=sample_rate, original_channels=int(audio.shape[0]), model=self.name)

    def decode_file(self, code_file: CodeFile, sample_rate: int | None = None) -> tuple[Tensor, int]:
        """Decode a :class:`CodeFile` to mono audio trimmed to the original duration.

        Args:
            code_file: codes + metadata.
            sample_rate: output rate (default: the original file's rate).

        Returns:
            (audio [1, N] float32, sample_rate).
        """
        if code_file.codebook_size != self.codebook_size or code_file.n_q > self.n_codebooks:
            raise ValueError(f"code file ({code_file.n_q} x {code_file.codebook_size} codes from "
                             f"{code_file.model!r}) does not fit this codec ({self.n_codebooks} x {self.codebook_size})")
        audio = self.decode(torch.from_numpy(code_file.codes.astype(np.int64)))[0]
        out_sr = int(sample_rate or code_file.original_sample_rate)
        audio = resample(audio, self.sample_rate, out_sr)
        length = math.ceil(code_file.original_length * out_sr / code_file.original_sample_rate)
        return audio[..., :length], out_sr

    def decode_to_file(self, code_file: CodeFile, path: str | Path, sample_rate: int | None = None) -> Path:
        """Decode a :class:`CodeFile` and write the audio (format from the suffix). Returns the path.

        Raises:
            ValueError: a format that cannot keep the exact length (MP3) or an unknown suffix, before decoding.
        """
        check_output_audio(path)
        audio, out_sr = self.decode_file(code_file, sample_rate)
        return write_audio(path, audio, out_sr)


def load_teacher(name_or_path: str | Path, device: str | torch.device = "cpu") -> MuQTeacher:
    """The frozen teacher a checkpoint was trained with (its config and, if stored, ``teacher.safetensors``),
    without building the generator. For feature-extraction workers of a fine-tuning run.

    Args:
        name_or_path: a checkpoint directory or an MLflow URI (as for :meth:`Codec.from_pretrained`).
    """
    directory = resolve_checkpoint_dir(name_or_path)
    weights = directory / TEACHER_FILE
    cfg = load_codec_config(directory / CONFIG_FILE)
    return build_teacher(cfg, weights if weights.is_file() else None).to(device)


def conv_reach(module: nn.Module) -> tuple[int, int]:
    """(left, right) reach in input samples of the receptive field of a stack of 1-D convolutions.

    Walks every ``nn.Conv1d`` below ``module`` in registration order (the forward order of a DAC-style encoder,
    whose residual branches only add to the reach of the main path). Output frame ``t`` of the stack depends on
    input samples ``[t * stride - left, t * stride + right]``.
    """
    jump, left, right = 1, 0, 0
    for conv in (m for m in module.modules() if isinstance(m, nn.Conv1d)):
        (kernel,), (dilation,), (stride,), (padding,) = conv.kernel_size, conv.dilation, conv.stride, conv.padding
        left += padding * jump
        right += (dilation * (kernel - 1) - padding) * jump
        jump *= stride
    return left, right
