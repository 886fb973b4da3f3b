"""Codec config: presets load and validate, unknown keys / bad types / bad values fail naming the key."""

from __future__ import annotations

import math

import pytest

from codec.config import ConfigError, list_presets, load_codec_config, presets_dir


@pytest.mark.parametrize("preset", ["muq_xcodec", "tiny"])
def test_presets_load(preset):
    cfg = load_codec_config(preset)
    assert cfg.name == preset
    assert math.prod(cfg.model.encoder_rates) == 960
    assert cfg.model.sample_rate // 960 == 25
    assert (cfg.model.n_codebooks, cfg.model.codebook_size) == (8, 1024)
    assert cfg.inference.chunk_seconds == 10 and cfg.inference.mode == "default"
    assert cfg.loss.semantic == 10.0 and cfg.optim.betas == [0.8, 0.99]


def test_full_and_tiny_geometry():
    full, tiny = load_codec_config("muq_xcodec"), load_codec_config("tiny")
    assert (full.model.encoder_dim, full.model.decoder_dim, full.teacher.dim) == (64, 1536, 1024)
    assert full.teacher.source == "pretrained" and full.teacher.model_id == "OpenMuQ/MuQ-large-msd-iter"
    assert tiny.teacher.source == "random" and tiny.teacher.dim == 32
    assert tiny.model.encoder_rates == full.model.encoder_rates  # tiny inherits via `base:`


def test_every_preset_file_is_listed_and_loads():
    files = sorted(p.stem for p in presets_dir().glob("*.yaml"))
    assert files == list_presets()
    for name in files:
        load_codec_config(name)


def test_path_and_overrides(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: tiny\nname: mine\nmodel:\n  n_codebooks: 4\n")
    cfg = load_codec_config(path, ["inference.window_seconds=20"])
    assert (cfg.name, cfg.model.n_codebooks, cfg.model.encoder_dim) == ("mine", 4, 8)
    assert cfg.inference.window_seconds == 20
    assert load_codec_config("tiny", {"model": {"n_codebooks": 2}}).model.n_codebooks == 2


def test_config_is_read_only():
    cfg = load_codec_config("tiny")
    with pytest.raises(Exception):  # noqa: B017 - omegaconf's ReadonlyConfigError
        cfg.model.n_codebooks = 3


@pytest.mark.parametrize("override, key", [
    (["model.encoder_dimm=8"], "model.encoder_dimm"),
    (["bogus=1"], "bogus"),
    (["model.n_codebooks=eight"], "model.n_codebooks"),
    (["inference.chunk_seconds=abc"], "inference.chunk_seconds"),
])
def test_unknown_key_or_wrong_type_names_the_key(override, key):
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        load_codec_config("tiny", override)


@pytest.mark.parametrize("override, key", [
    (["model.encoder_rates=[2,4,10,11]"], "model.encoder_rates"),
    (["model.decoder_rates=[12,10,4]"], "model.decoder_rates"),
    (["model.n_codebooks=0"], "model.n_codebooks"),
    (["model.encoder_dim=-1"], "model.encoder_dim"),
    (["model.codebook_size=1000"], "model.codebook_size"),
    (["model.quantizer_dropout=1.5"], "model.quantizer_dropout"),
    (["model.dc_block_seconds=-0.2"], "model.dc_block_seconds"),
    (["teacher.source=hub"], "teacher.source"),
    (["teacher.heads=3"], "teacher.heads"),
    (["teacher.layer=9"], "teacher.layer"),
    (["inference.chunk_seconds=0"], "inference.chunk_seconds"),
    (["inference.chunk_seconds=0.01"], "inference.chunk_seconds"),
    (["inference.context_seconds=-1"], "inference.context_seconds"),
    (["inference.window_seconds=5"], "inference.window_seconds"),
    (["inference.mode=fast"], "inference.mode"),
    (["optim.lr=0"], "optim.lr"),
    (["loss.mel=-1"], "loss.mel"),
    (["discriminator.bands=[[0.5,0.2]]"], "discriminator.bands"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ValueError, match=rf"^{key}: "):
        load_codec_config("tiny", override)


def test_unknown_preset():
    with pytest.raises(FileNotFoundError, match="tiny"):
        load_codec_config("no_such_preset")


def test_builders_turn_the_config_into_objects():
    import torch

    from codec.builders import build_discriminator, build_generator, build_train_step, loss_weights

    cfg = load_codec_config("tiny", ["loss.mel=7.5", "optim.lr=3e-4"])
    generator, again = build_generator(cfg), build_generator(cfg)
    assert (generator.hop_length, generator.n_codebooks, generator.semantic_dim) == (960, 8, cfg.teacher.dim)
    assert all(torch.equal(a, b) for a, b in zip(generator.state_dict().values(), again.state_dict().values(),
                                                    strict=True))  # seeded from cfg.seed
    step = build_train_step(cfg, generator, build_discriminator(cfg))
    assert step.optimizer_g.param_groups[0]["lr"] == 3e-4
    assert loss_weights(cfg)["mel"] == 7.5 and set(loss_weights(cfg)) == {
        "commitment", "codebook", "mel", "adv", "feature_matching", "semantic"}
