"""Codec inference API: shapes, bitrates, input handling, split/batch-independent codes, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from utils import music_clip

from codec import Codec
from codec.audio import to_mono
from codec.builders import build_generator, build_teacher
from codec.checkpoint import CONFIG_FILE, MODEL_FILE, TEACHER_FILE
from codec.config import load_codec_config

# A small chunk grid keeps most tests fast; the 60 s acceptance test uses the shipped 10 s grid.
SMALL_GRID = ["inference.chunk_seconds=1", "inference.context_seconds=0.4", "inference.window_seconds=2"]
PADDED = "inference.teacher_window=padded"  # the MuQ windows of checkpoints written before the key


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec.from_pretrained("tiny", overrides=SMALL_GRID)


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a == b).float().mean().item()


def test_ten_seconds_gives_250_frames_of_8_codes():
    codec = Codec.from_pretrained("tiny")
    codes = codec.encode(music_clip(10.0)[:, 0], sample_rate=24000)
    assert codes.shape == (1, 8, 250) and codes.dtype == torch.int16
    assert codes.min() >= 0 and codes.max() < 1024
    assert (codec.sample_rate, codec.frame_rate, codec.hop_length, codec.n_codebooks) == (24000, 25.0, 960, 8)
    audio = codec.decode(codes)
    assert audio.shape == (1, 1, 250 * 960) and torch.isfinite(audio).all()


def test_bitrate_maps_to_layers(codec):
    assert codec.bitrate_per_layer == 250
    assert codec.resolve_n_q(bitrate=2000) == 8 and codec.resolve_n_q(bitrate=1000) == 4
    assert codec.resolve_n_q() == 8 and codec.resolve_n_q(n_q=3) == 3
    with pytest.raises(ValueError, match="250, 500, 750, 1000, 1250, 1500, 1750, 2000"):
        codec.resolve_n_q(bitrate=300)
    with pytest.raises(ValueError, match="n_q"):
        codec.resolve_n_q(n_q=9)
    with pytest.raises(ValueError, match="disagree"):
        codec.resolve_n_q(n_q=2, bitrate=1000)


def test_fewer_layers_are_a_prefix(codec):
    x = music_clip(3.0, seed=1)[:, 0]
    full = codec.encode(x, 24000)
    four = codec.encode(x, 24000, bitrate=1000)
    assert four.shape == (1, 4, 75)
    assert agreement(four, full[:, :4]) >= 0.99
    assert codec.decode(four).shape == (1, 1, 75 * 960)
    assert codec.decode(full, n_q=4).shape == (1, 1, 75 * 960)


def test_input_layouts_rates_and_channels(codec):
    mono = music_clip(1.5, seed=2)[:, 0]
    ref = codec.encode(mono, 24000)
    assert ref.shape == (1, 8, 38)
    assert torch.equal(codec.encode(torch.from_numpy(mono)[None], 24000), ref)  # [C, N] tensor
    assert torch.equal(codec.encode(mono[None, None], 24000), ref)  # [B, C, N] numpy
    stereo = music_clip(1.5, channels=2, seed=3).T  # [2, N]
    downmixed = codec.encode(stereo.mean(axis=0), 24000)
    assert torch.equal(codec.encode(stereo, 24000), downmixed)  # downmix = mean of channels
    clip_44k = music_clip(1.2, sample_rate=44100, seed=4).T
    assert codec.encode(clip_44k, 44100).shape == (1, 8, codec.num_frames(clip_44k.shape[-1], 44100))
    assert codec.num_frames(clip_44k.shape[-1], 44100) == 30  # ceil(28800 / 960)
    with pytest.raises(ValueError, match="channels first"):
        codec.encode(music_clip(1.0, channels=2), 24000)  # [N, C]


def test_split_independent_codes(codec):
    x = music_clip(6.5, seed=5)[:, 0]
    per_window = {w: Codec.from_pretrained("tiny", overrides=[*SMALL_GRID, f"inference.window_seconds={w}"])
                  for w in (1, 3)}
    assert per_window[1]._grid() == (25, 10, 1) and per_window[3]._grid() == (25, 10, 3)
    one, three = (per_window[w].encode(x, 24000) for w in (1, 3))
    assert one.shape == (1, 8, 163)
    assert agreement(one, three) >= 0.99


@pytest.mark.slow
def test_split_independent_codes_on_sixty_seconds():
    x = music_clip(60.0, seed=5)[:, 0]
    short = Codec.from_pretrained("tiny", overrides=["inference.window_seconds=10"]).encode(x, 24000)
    long = Codec.from_pretrained("tiny", overrides=["inference.window_seconds=30"]).encode(x, 24000)
    assert short.shape == (1, 8, 1500)
    assert agreement(short, long) >= 0.99


def test_batched_tracks_equal_each_alone(codec):
    a, b = music_clip(2.3, seed=6)[:, 0], music_clip(1.2, seed=7)[:, 0]
    alone_a, alone_b = codec.encode(a, 24000), codec.encode(b, 24000)
    listed = codec.encode([a, b], 24000)
    assert listed.shape == (2, 8, alone_a.shape[-1])
    assert agreement(listed[:1], alone_a) >= 0.99
    assert agreement(listed[1:, :, :alone_b.shape[-1]], alone_b) >= 0.99
    assert (listed[1, :, alone_b.shape[-1]:] == -1).all()  # padding past the shorter track
    padded = np.zeros((2, 1, a.shape[0]), np.float32)
    padded[0, 0], padded[1, 0, :b.shape[0]] = a, b
    padded[1, 0, b.shape[0]:] = 0.5  # garbage past `lengths` must be ignored
    batched = codec.encode(padded, 24000, lengths=[a.shape[0], b.shape[0]])
    assert torch.equal(batched, listed)


def test_reference_mode_uses_non_overlapping_chunks():
    codec = Codec.from_pretrained("tiny", overrides=["inference.mode=reference"])
    assert codec._grid() == (250, 0, 3)
    codes = codec.encode(music_clip(11.0, seed=8)[:, 0], 24000)
    assert codes.shape == (1, 8, 275) and codes.min() >= 0


def encode_every_window(codec: Codec, audio, lengths=None) -> torch.Tensor:
    """The reference: the grid computed literally, teacher AND acoustic encoder on every chunk's window."""
    from codec.audio import as_track_list

    tracks = [to_mono(t) for t in as_track_list(audio, lengths)]
    frames = [codec.num_frames(t.shape[-1]) for t in tracks]
    out = torch.full((len(tracks), codec.n_codebooks, max(frames)), -1, dtype=torch.int16)
    codec.encode_windows(tracks, frames, codec.n_codebooks, out)
    return out


def check_span_encoding(codec: Codec, seconds: tuple[float, ...], batch: tuple[float, ...]) -> None:
    """``codec.encode`` (acoustic encoder once per span, short tracks not padded to a window) gives exactly the
    codes of running teacher and encoder on every window, for each track alone and in a padded batch."""
    clips = {s: music_clip(s, seed=20 + i)[:, 0] for i, s in enumerate(seconds)}
    for s, x in clips.items():
        fast = codec.encode(x, 24000)
        assert fast.shape == (1, 8, codec.num_frames(x.shape[0])), s
        assert torch.equal(fast, encode_every_window(codec, x)), s
    items = [clips[s] for s in batch]
    padded = np.zeros((len(items), 1, max(len(x) for x in items)), np.float32)
    for n, x in enumerate(items):
        padded[n, 0, :len(x)] = x
    lengths = [len(x) for x in items]
    fast = codec.encode(padded, 24000, lengths=lengths)
    assert torch.equal(fast, encode_every_window(codec, padded, lengths))
    for n, s in enumerate(batch):  # and each item equals encoding it alone
        assert torch.equal(fast[n, :, :codec.num_frames(lengths[n])], codec.encode(clips[s], 24000)[0])


def test_encoder_once_per_span_gives_the_codes_of_every_window():
    """``teacher_window: padded``, small grid (1 s chunks, 0.4 s context, 2 chunks per pass): multi-chunk spans,
    mixed-track passes."""
    padded = Codec.from_pretrained("tiny", overrides=[*SMALL_GRID, PADDED])
    check_span_encoding(padded, (0.5, 1.0, 2.5, 3.3), batch=(2.5, 0.5, 3.3, 1.0))


@pytest.mark.slow
def test_encoder_once_per_span_gives_the_codes_of_every_window_on_the_shipped_grid():
    """``teacher_window: padded`` on the shipped 10 s grid over 0.5, 3, 10, 12.5 and 60 s tracks and a padded
    batch: the codes of the previous default, bit for bit."""
    check_span_encoding(Codec.from_pretrained("tiny", overrides=[PADDED]), (0.5, 3.0, 10.0, 12.5, 60.0),
                        batch=(12.5, 0.5, 3.0, 10.0))


def check_track_only_codes(overrides: list[str], seconds: tuple[float, ...], batch: tuple[float, ...],
                           windows: tuple[float, ...]) -> None:
    """``teacher_window: trimmed`` codes of each track are equal for every ``window_seconds`` and inside a padded
    batch (next to other tracks, some of the same length) as alone."""
    codecs = [Codec.from_pretrained("tiny", overrides=[*overrides, f"inference.window_seconds={w}"]) for w in windows]
    assert all(c.config.inference.teacher_window == "trimmed" for c in codecs)
    assert len({c._grid()[2] for c in codecs}) == len(windows)  # really different chunks per pass
    clips = {s: music_clip(s, seed=40 + i)[:, 0] for i, s in enumerate(seconds)}
    alone = {s: codecs[0].encode(x, 24000) for s, x in clips.items()}
    for s, x in clips.items():
        assert alone[s].shape == (1, 8, codecs[0].num_frames(x.shape[0])) and alone[s].min() >= 0, s
        for c in codecs[1:]:
            assert torch.equal(c.encode(x, 24000), alone[s]), (s, c.config.inference.window_seconds)
    items = [clips[s] for s in batch]
    padded = np.full((len(items), 1, max(len(x) for x in items)), 0.5, np.float32)  # garbage past `lengths`
    for n, x in enumerate(items):
        padded[n, 0, :len(x)] = x
    lengths = [len(x) for x in items]
    for c in codecs:
        codes = c.encode(padded, 24000, lengths=lengths)
        for n, s in enumerate(batch):
            assert torch.equal(codes[n:n + 1, :, :alone[s].shape[-1]], alone[s]), (s, c.config.inference.window_seconds)


def test_trimmed_codes_depend_only_on_the_track():
    """Shipped 10 s grid: 0.5, 3, 10 and 12.5 s tracks (12.5 s: MuQ windows of 12 s and 4.5 s)."""
    check_track_only_codes([], (0.5, 3.0, 10.0, 12.5), batch=(12.5, 0.5, 3.0, 10.0, 0.5, 3.0), windows=(10, 30))


def test_trimmed_codes_depend_only_on_the_track_on_a_small_grid():
    """1 s chunks: multi-chunk tracks, a track shorter than one frame (0.02 s), last chunks of several lengths;
    and without context (a last chunk of one frame borrows one more frame of the track: MuQ needs two)."""
    seconds = (0.02, 0.5, 1.0, 1.04, 2.5, 3.3)
    check_track_only_codes(SMALL_GRID[:2], seconds, batch=(2.5, 0.02, 3.3, 1.04, 2.5, 0.5), windows=(1, 2, 3))
    no_context = ["inference.chunk_seconds=1", "inference.context_seconds=0"]
    check_track_only_codes(no_context, (1.04, 2.5), batch=(2.5, 1.04, 1.04), windows=(1, 2))


@pytest.mark.slow
def test_trimmed_codes_depend_only_on_the_track_on_sixty_seconds():
    check_track_only_codes([], (60.0, 12.5), batch=(60.0, 12.5, 60.0), windows=(10, 30))


def semantic_seen_by_quantizer(codec: Codec, x: np.ndarray, monkeypatch) -> torch.Tensor:
    """The teacher features [T, Ds] that ``codec.encode(x)`` fuses with the acoustic latent (x: one span)."""
    seen = []
    encode = codec.generator.encode

    def spy(audio, semantic, n_q=None):
        seen.append(semantic)
        return encode(audio, semantic, n_q)

    with monkeypatch.context() as m:
        m.setattr(codec.generator, "encode", spy)
        frames = codec.encode(x, 24000).shape[-1]
    assert len(seen) == 1
    before = codec.encoder_context()[0]
    return seen[0][0, before:before + frames]


def test_trimmed_teacher_sees_only_the_track(monkeypatch):
    """Trimmed MuQ features of a short track are MuQ run directly on the track (no zeros past its last frame),
    and a later chunk's are MuQ on that chunk plus its context clipped to the track."""
    codec = Codec.from_pretrained("tiny")
    padded = Codec.from_pretrained("tiny", overrides=[PADDED])
    teacher = padded.teacher = codec.get_teacher()
    for seconds in (0.5, 3.0):
        x = music_clip(seconds, seed=50)[:, 0]
        frames = codec.num_frames(x.shape[0])
        track = torch.nn.functional.pad(torch.from_numpy(x), (0, frames * 960 - x.shape[0]))[None]
        with torch.inference_mode():
            direct = teacher(track)[0]
        assert torch.equal(semantic_seen_by_quantizer(codec, x, monkeypatch), direct), seconds
        assert not torch.allclose(semantic_seen_by_quantizer(padded, x, monkeypatch), direct)  # the zeros matter
    x = music_clip(12.5, seed=51)[:, 0]  # 313 frames: chunk 0 sees frames [0, 300), chunk 1 [200, 313)
    track = torch.nn.functional.pad(torch.from_numpy(x), (0, 313 * 960 - x.shape[0]))[None]
    with torch.inference_mode():
        first, second = teacher(track[:, :300 * 960])[0, :250], teacher(track[:, 200 * 960:])[0, 50:]
    assert torch.equal(semantic_seen_by_quantizer(codec, x, monkeypatch), torch.cat([first, second]))


def test_config_without_teacher_window_is_padded(tmp_path):
    """A checkpoint's config.yaml written before ``inference.teacher_window`` existed loads as ``padded`` and
    keeps its codes; the shipped presets are ``trimmed``."""
    assert load_codec_config("muq_xcodec").inference.teacher_window == "trimmed"
    assert load_codec_config("tiny").inference.teacher_window == "trimmed"
    directory = Codec.from_pretrained("tiny", overrides=SMALL_GRID).save_pretrained(tmp_path / "old")
    stored = (directory / CONFIG_FILE).read_text()
    assert "teacher_window: trimmed" in stored
    (directory / CONFIG_FILE).write_text("".join(line for line in stored.splitlines(keepends=True)
                                                 if "teacher_window" not in line))
    old = Codec.from_pretrained(directory)
    assert old.config.inference.teacher_window == "padded"
    x = music_clip(2.5, seed=52)[:, 0]
    assert torch.equal(old.encode(x, 24000), encode_every_window(old, x))


def test_encoder_context_covers_the_receptive_field():
    """A change of one input sample moves only encoder frames within encoder_context() of it: up to ``before``
    frames after it (they read that far back) and ``after`` frames before it, and no fewer."""
    codec = Codec.from_pretrained("tiny")
    hop, (before, after) = codec.hop_length, codec.encoder_context()
    assert 1 <= before <= 6 and 1 <= after <= 6  # a fraction of a second, not the 2 s of MuQ
    x = torch.from_numpy(music_clip(4.0, seed=30)[:, 0])[None, None]
    changed = {}
    for name, sample in (("first", 50 * hop), ("last", 50 * hop + hop - 1)):  # samples of frame 50
        moved = x.clone()
        moved[..., sample] += 1.0
        with torch.no_grad():
            delta = (codec.generator.encoder(x) - codec.generator.encoder(moved)).abs().amax(dim=1)[0]
        changed[name] = torch.nonzero(delta > 0).flatten()
        assert changed[name].min() >= 50 - after and changed[name].max() <= 50 + before, name
    # and no more context than needed: the frame's first sample reaches exactly `after` frames back, its last
    # sample exactly `before` frames ahead
    assert changed["first"].min() == 50 - after and changed["last"].max() == 50 + before
    # a grid whose context is shorter than the reach keeps the literal windows (the span encoder would differ)
    short = Codec.from_pretrained("tiny", overrides=[*SMALL_GRID, "inference.context_seconds=0.2", PADDED])
    assert short._grid()[1] < max(before, after)
    clip = music_clip(2.5, seed=33)[:, 0]
    assert torch.equal(short.encode(clip, 24000), encode_every_window(short, clip))


@pytest.mark.slow
def test_compiled_encoder_gives_the_same_codes():
    x = music_clip(3.3, seed=31)[:, 0]
    eager = Codec.from_pretrained("tiny", overrides=SMALL_GRID).encode(x, 24000)
    compiled = Codec.from_pretrained("tiny", overrides=[*SMALL_GRID, "inference.compile=true"])
    assert torch.equal(compiled.encode(x, 24000), eager)
    assert compiled.generator.encoder._compiled_call_impl is not None


def test_per_chunk_decode_is_each_chunk_decoded_alone():
    """``decode: per_chunk`` = the original's chunked reconstruction; ``context`` (default) ~ one whole decode."""
    codec = Codec.from_pretrained("tiny", overrides=[*SMALL_GRID, "inference.mode=reference"])
    codes = codec.encode(music_clip(2.6, seed=32)[:, 0], 24000)  # chunks of 25 frames: 25 + 25 + 15
    assert codes.shape[-1] == 65
    with torch.no_grad():
        alone = torch.cat([codec.generator.decode(codes[..., k:k + 25].long()) for k in (0, 25, 50)], dim=-1)
        whole = codec.generator.decode(codes.long())
    per_chunk = codec.configure(decode="per_chunk").decode(codes)
    torch.testing.assert_close(per_chunk, alone, rtol=0, atol=1e-6)
    context = codec.configure(decode="context").decode(codes)
    tol = 1e-4 * whole.abs().max().item()
    torch.testing.assert_close(context, whole, atol=tol, rtol=0)
    assert (per_chunk - whole).abs().max() > 100 * tol  # the two differ near chunk boundaries
    with pytest.raises(ValueError, match="inference.decode"):
        codec.configure(decode="overlap")


def test_chunked_decode_matches_whole_decode(codec):
    codes = codec.encode(music_clip(2.5, seed=9)[:, 0], 24000)
    with torch.no_grad():
        whole = codec.generator.decode(codes.long())
    torch.testing.assert_close(codec.decode(codes), whole, atol=1e-4 * whole.abs().max().item(), rtol=0)


def test_save_pretrained_round_trip(codec, tmp_path):
    x = music_clip(1.5, seed=10)[:, 0]
    before = codec.encode(x, 24000)
    path = codec.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in path.iterdir()) == sorted([CONFIG_FILE, MODEL_FILE, TEACHER_FILE])
    loaded = Codec.from_pretrained(path)
    assert loaded.name == str(path.resolve())  # recorded in code files; usable from any working directory
    assert load_codec_config(path / CONFIG_FILE) == loaded.config
    assert torch.equal(loaded.encode(x, 24000), before)
    torch.testing.assert_close(loaded.decode(before), codec.decode(before))


def test_published_teacher_is_not_stored(tmp_path):
    cfg = load_codec_config("tiny", ["teacher.source=pretrained", "teacher.model_id=OpenMuQ/MuQ-large-msd-iter"])
    codec = Codec(build_generator(cfg), cfg)
    codec.save_pretrained(tmp_path)
    assert not (tmp_path / TEACHER_FILE).exists()
    assert "OpenMuQ/MuQ-large-msd-iter" in (tmp_path / CONFIG_FILE).read_text()
    loaded = Codec.from_pretrained(tmp_path)  # decode works without ever loading MuQ
    assert loaded.teacher is None
    assert loaded.decode(torch.zeros(1, 8, 5, dtype=torch.int16)).shape == (1, 1, 5 * 960)


def test_teacher_is_untouched_by_codec_and_not_trainable():
    cfg = load_codec_config("tiny", SMALL_GRID)
    teacher = build_teacher(cfg)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    codec = Codec(build_generator(cfg), cfg, teacher=teacher)
    codec.train()
    codec.encode(music_clip(1.0, seed=11)[:, 0], 24000)
    after = teacher.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    assert not any(n.startswith("teacher") for n, _ in codec.generator.named_parameters())


def test_decode_rejects_bad_codes(codec):
    with pytest.raises(ValueError, match=r"\[0, 1024\)"):
        codec.decode(torch.full((1, 8, 3), 1024))
    with pytest.raises(ValueError, match="K <= 8"):
        codec.decode(torch.zeros(1, 9, 3, dtype=torch.long))


def test_unknown_model_name():
    with pytest.raises(FileNotFoundError, match="tiny"):
        Codec.from_pretrained("no-such-model")


@pytest.mark.slow
def test_mlflow_runs_uri(tmp_path, mlflow_sqlite):
    import mlflow

    codec = Codec.from_pretrained("tiny")
    codec.save_pretrained(tmp_path / "ckpt")
    experiment = mlflow.create_experiment("codec-uri", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifacts(str(tmp_path / "ckpt"), artifact_path="codec")
    client = mlflow.MlflowClient()
    client.create_registered_model("tiny-codec")
    version = client.create_model_version("tiny-codec", source=f"{run.info.artifact_uri}/codec",
                                          run_id=run.info.run_id)
    client.set_registered_model_alias("tiny-codec", "prod", version.version)
    x = music_clip(1.0, seed=12)[:, 0]
    expected = codec.encode(x, 24000)
    for uri in (f"runs:/{run.info.run_id}/codec", "models:/tiny-codec@prod", f"models:/tiny-codec/{version.version}"):
        loaded = Codec.from_pretrained(uri)
        assert loaded.name == uri
        assert torch.equal(loaded.encode(x, 24000), expected)
