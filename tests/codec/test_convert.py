"""Import / export of the original muq-xcodec Lightning checkpoint layout.

The source checkpoints are built here with the original key names (old-style ``weight_g``/``weight_v``
weight norm, ``fc_post1``/``fc_post2``, the ``generator.N`` aliases of the original ``nn.ModuleList``,
``semantic.`` MuQ, DAC ``discriminator.`` with its ``Sequential(conv, LeakyReLU)`` wrappers), random
values, and saved with ``torch.save`` as a Lightning dict. The expected numbers come from an independent
functional forward of the ORIGINAL math (DAC distance formula, original inference loop) on those raw
tensors; the MuQ reference is a freshly constructed ``muq.MuQ`` loaded with the raw ``semantic.`` tensors.

MuQ is kept small in every test (one conformer layer; its width equals the latent width as the original
requires); the slow test uses the full XCodec geometry (encoder 64 -> latent 1024, decoder 1536, 8 x 1024).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from original_checkpoint import lightning, muq_config, original_state, write_original_checkpoint

from codec.builders import build_discriminator
from codec.config import load_codec_config
from codec.convert import CheckpointError, export_state_dict, import_muq_xcodec, load_checkpoint
from codec.inference import Codec

HOP = 960


def count_tensors(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return 1
    if isinstance(obj, dict):
        return sum(count_tensors(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(count_tensors(v) for v in obj)
    return 0


# ------------------------------------------------------------------- independent forward of the original
def wn(sd: dict, p: str) -> torch.Tensor:
    g, v = sd[p + ".weight_g"], sd[p + ".weight_v"]
    return g * v / v.norm(dim=tuple(range(1, v.dim())), keepdim=True)


def snake(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    return x + (alpha + 1e-9).reciprocal() * torch.sin(alpha * x).pow(2)


def residual_unit(sd: dict, p: str, x: torch.Tensor, dilation: int) -> torch.Tensor:
    y = F.conv1d(snake(x, sd[p + ".block.0.alpha"]), wn(sd, p + ".block.1"), sd[p + ".block.1.bias"],
                 padding=3 * dilation, dilation=dilation)
    return x + F.conv1d(snake(y, sd[p + ".block.2.alpha"]), wn(sd, p + ".block.3"), sd[p + ".block.3.bias"])


def f_encoder(sd: dict, x: torch.Tensor) -> torch.Tensor:
    x = F.conv1d(x, wn(sd, "encoder.block.0"), sd["encoder.block.0.bias"], padding=3)
    i = 1
    while f"encoder.block.{i}.block.4.weight_v" in sd:
        p = f"encoder.block.{i}.block"
        stride = sd[p + ".4.weight_v"].shape[-1] // 2
        for j, d in enumerate((1, 3, 9)):
            x = residual_unit(sd, f"{p}.{j}", x, d)
        x = F.conv1d(snake(x, sd[p + ".3.alpha"]), wn(sd, p + ".4"), sd[p + ".4.bias"], stride=stride,
                     padding=math.ceil(stride / 2))
        i += 1
    x = snake(x, sd[f"encoder.block.{i}.alpha"])
    return F.conv1d(x, wn(sd, f"encoder.block.{i + 1}"), sd[f"encoder.block.{i + 1}.bias"], padding=1)


def f_decoder(sd: dict, x: torch.Tensor) -> torch.Tensor:
    x = F.conv1d(x, wn(sd, "decoder.model.0"), sd["decoder.model.0.bias"], padding=3)
    i = 1
    while f"decoder.model.{i}.block.1.weight_v" in sd:
        p = f"decoder.model.{i}.block"
        rate = sd[p + ".1.weight_v"].shape[-1] // 2
        x = F.conv_transpose1d(snake(x, sd[p + ".0.alpha"]), wn(sd, p + ".1"), sd[p + ".1.bias"], stride=rate,
                               padding=math.ceil(rate / 2))
        for j, d in zip((2, 3, 4), (1, 3, 9), strict=True):
            x = residual_unit(sd, f"{p}.{j}", x, d)
        i += 1
    x = snake(x, sd[f"decoder.model.{i}.alpha"])
    return torch.tanh(F.conv1d(x, wn(sd, f"decoder.model.{i + 1}"), sd[f"decoder.model.{i + 1}.bias"], padding=3))


def f_quantize(sd: dict, z: torch.Tensor) -> torch.Tensor:
    """DAC RVQ (eval): codes [B, K, T] with DAC's euclidean-distance formula on normalised vectors."""
    residual, codes, k = z, [], 0
    while f"quantizer.quantizers.{k}.codebook.weight" in sd:
        p = f"quantizer.quantizers.{k}"
        z_e = F.conv1d(residual, wn(sd, p + ".in_proj"), sd[p + ".in_proj.bias"])
        enc = F.normalize(z_e.transpose(1, 2).reshape(-1, z_e.shape[1]))
        book = F.normalize(sd[p + ".codebook.weight"])
        dist = enc.pow(2).sum(1, keepdim=True) - 2 * enc @ book.t() + book.pow(2).sum(1, keepdim=True).t()
        idx = (-dist).max(1)[1].view(z.shape[0], -1)
        q = F.embedding(idx, sd[p + ".codebook.weight"]).transpose(1, 2)
        residual = residual - F.conv1d(q, wn(sd, p + ".out_proj"), sd[p + ".out_proj.bias"])
        codes.append(idx)
        k += 1
    return torch.stack(codes, dim=1)


def f_from_codes(sd: dict, codes: torch.Tensor) -> torch.Tensor:
    z_q = 0.0
    for i in range(codes.shape[1]):
        p = f"quantizer.quantizers.{i}"
        q = F.embedding(codes[:, i], sd[p + ".codebook.weight"]).transpose(1, 2)
        z_q = z_q + F.conv1d(q, wn(sd, p + ".out_proj"), sd[p + ".out_proj.bias"])
    return z_q


def reference_muq(state: dict, cfg: dict):
    from muq import MuQ
    from muq.muq.muq import MuQConfig

    muq = MuQ(MuQConfig(**cfg))
    muq.load_state_dict({k[len("semantic."):]: v for k, v in state.items() if k.startswith("semantic.")})
    return muq.eval()


@torch.no_grad()
def original_encode(sd: dict, muq, audio: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """The original inference.py: first channel, right-pad to the hop, non-overlapping chunks, batch 1."""
    audio = F.pad(audio, (0, math.ceil(audio.shape[-1] / HOP) * HOP - audio.shape[-1]))
    codes = []
    for start in range(0, audio.shape[-1], chunk_size):
        chunk = audio[0:1, start:start + chunk_size].unsqueeze(0)
        z_a = f_encoder(sd, chunk).permute(0, 2, 1)
        z_s = muq(chunk, output_hidden_states=True).last_hidden_state
        z = F.linear(torch.cat([z_a, z_s], dim=2), sd["fc_prior.weight"], sd["fc_prior.bias"]).permute(0, 2, 1)
        codes.append(f_quantize(sd, z))
    return torch.cat(codes, dim=2)


@torch.no_grad()
def original_decode(sd: dict, codes: torch.Tensor) -> torch.Tensor:
    z_q = f_from_codes(sd, codes).permute(0, 2, 1)
    return f_decoder(sd, F.linear(z_q, sd["fc_post2.weight"], sd["fc_post2.bias"]).permute(0, 2, 1))


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory):
    ckpt, _, state, cfg = write_original_checkpoint(tmp_path_factory.mktemp("orig"))
    return ckpt.parent, state, cfg


@pytest.fixture(scope="module")
def tiny_imported(tiny_source, tmp_path_factory):
    d, _, _ = tiny_source
    out = tmp_path_factory.mktemp("imported")
    report = import_muq_xcodec(d / "last.ckpt", out, muq_config=d / "muq.json", with_discriminator=True)
    return out, report


def stereo_clip(seconds: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * 24000)
    t = torch.arange(n) / 24000
    left = 0.4 * torch.sin(2 * math.pi * 220 * t) + 0.05 * torch.randn(n, generator=g)
    right = 0.3 * torch.sin(2 * math.pi * 330 * t) + 0.05 * torch.randn(n, generator=g)
    return torch.stack([left, right])


# ------------------------------------------------------------------------------------------------ tests
def test_import_accounts_for_every_tensor(tiny_source, tiny_imported):
    d, state, _ = tiny_source
    out, report = tiny_imported
    total = count_tensors(torch.load(d / "last.ckpt", weights_only=True))
    assert report.n_mapped + report.n_dropped == total
    mapped = {k for keys in report.mapped.values() for k in keys}
    dropped = {k for keys in report.dropped.values() for k in keys}
    assert not mapped & dropped and mapped | {k for k in dropped if k in state} == set(state)
    assert {k for k in state if k.startswith("generator.")} <= dropped  # aliases, checked equal
    assert any(k.startswith("optimizer_states/") for k in dropped)
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "discriminator.safetensors",
                                                     "model.safetensors", "teacher.safetensors"]
    assert "mapped" in report.summary() and "dropped" in report.summary()


def test_imported_config_is_reference_mode_with_imported_teacher(tiny_imported, tiny_source):
    out, _ = tiny_imported
    cfg = load_codec_config(out / "config.yaml")
    assert cfg.inference.mode == "reference" and cfg.inference.chunk_seconds == 10
    assert cfg.teacher.source == "imported" and cfg.teacher.dim == 64
    assert cfg.teacher.muq_config.stat.melspec_2048_mean == pytest.approx(6.77)
    assert (cfg.model.encoder_dim, list(cfg.model.encoder_rates), cfg.model.decoder_dim) == (4, [2, 4, 10, 12], 32)
    assert cfg.model.quantizer_dropout == 0.0
    assert load_codec_config("muq_xcodec").inference.mode == "default"  # our default stays


def test_imported_codes_and_audio_equal_the_original_forward(tiny_source, tiny_imported):
    _, state, cfg = tiny_source
    out, _ = tiny_imported
    codec = Codec.from_pretrained(out).configure(chunk_seconds=1.0)  # 1 s chunks: several + a short last one
    audio = stereo_clip(2.5)[:, :2 * 24000 + 12345]
    codes = codec.encode(audio, 24000)
    expected = original_encode(state, reference_muq(state, cfg), audio, chunk_size=24000)
    assert codes.shape == expected.shape == (1, 8, math.ceil(audio.shape[-1] / HOP))
    torch.testing.assert_close(codes.long(), expected, rtol=0, atol=0)
    torch.testing.assert_close(codec.decode(codes), original_decode(state, expected), rtol=1e-4, atol=1e-5)
    # our default mode (mean downmix, context) is still available on the same weights
    assert codec.configure(mode="default", context_seconds=0.2).encode(audio, 24000).shape == codes.shape


def test_imported_discriminator_loads(tiny_imported):
    from codec.checkpoint import load_weights

    out, _ = tiny_imported
    disc = load_weights(build_discriminator(load_codec_config(out / "config.yaml")), out / "discriminator.safetensors")
    assert len(disc(torch.zeros(1, 1, 4800))) == 8


def test_export_round_trips_to_the_source_layout(tiny_source, tiny_imported, tmp_path):
    _, state, _ = tiny_source
    out, _ = tiny_imported
    exported = export_state_dict(out, with_discriminator=True)
    assert set(exported) == set(state)
    for key, value in state.items():
        torch.testing.assert_close(exported[key], value, rtol=0, atol=0, msg=key)
    from codec.__main__ import main

    assert main(["export-muq-xcodec", str(out), str(tmp_path / "x.ckpt"), "--no-fresh-discriminator"]) == 0
    again = load_checkpoint(tmp_path / "x.ckpt")
    assert set(again["state_dict"]) == {k for k in state if not k.startswith("discriminator.")}
    assert again["muq_xcodec_export"]["discriminator"].startswith("absent")


def _lightning_load(path, muq: dict, disc_channels: int = 32, strict: bool = True):
    """The original ``CODEC.load_from_checkpoint`` (Lightning's own loader) on the original module layout."""
    from original_checkpoint import original_lightning_class

    return original_lightning_class(muq, disc_channels).load_from_checkpoint(path, map_location="cpu", strict=strict,
                                                                           weights_only=True)


def test_export_loads_strictly_with_lightning_and_a_fresh_discriminator(tiny_source, tiny_imported, tmp_path):
    from codec.__main__ import main
    from codec.convert import LIGHTNING_VERSION

    _, state, muq = tiny_source
    out, _ = tiny_imported
    assert main(["export-muq-xcodec", str(out), str(tmp_path / "codec.ckpt")]) == 0
    ckpt = load_checkpoint(tmp_path / "codec.ckpt")  # tensors and plain containers only
    assert ckpt["pytorch-lightning_version"] == LIGHTNING_VERSION
    assert ckpt["muq_xcodec_export"]["discriminator"].startswith("fresh: untrained")
    model = _lightning_load(tmp_path / "codec.ckpt", muq)  # strict: every key and shape of the original module
    assert model.init_args == {"encoder_dim": 4, "encoder_rates": [2, 4, 10, 12], "latent_dim": None,
                               "decoder_dim": 32, "decoder_rates": [12, 10, 4, 2], "n_codebooks": 8,
                               "codebook_size": 1024, "codebook_dim": 8, "quantizer_dropout": False,
                               "sample_rate": 24000}  # hyper_parameters reached __init__
    loaded = model.state_dict()
    for key, value in state.items():
        if not key.startswith("discriminator."):
            torch.testing.assert_close(loaded[key], value, rtol=0, atol=0, msg=key)
    disc = {k: v for k, v in loaded.items() if k.startswith("discriminator.")}
    assert len(disc) == 324 and all(v.abs().sum() > 0 for k, v in disc.items() if k.endswith("weight_v"))
    assert disc["discriminator.discriminators.0.convs.0.0.weight_v"].shape[0] == 32  # DAC's Discriminator()


def test_export_with_discriminator_loads_strictly_with_lightning(tiny_source, tiny_imported, tmp_path):
    from codec.convert import export_muq_xcodec

    _, state, muq = tiny_source
    out, _ = tiny_imported
    path = export_muq_xcodec(out, tmp_path / "codec.ckpt", with_discriminator=True)
    assert load_checkpoint(path)["muq_xcodec_export"]["discriminator"].startswith("trained")
    loaded = _lightning_load(path, muq, disc_channels=4).state_dict()  # the tiny source's discriminator width
    assert set(loaded) == set(state)
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0, msg=key)


def test_export_without_discriminator_needs_strict_false(tiny_source, tiny_imported, tmp_path):
    from codec.convert import export_muq_xcodec

    _, state, muq = tiny_source
    out, _ = tiny_imported
    path = export_muq_xcodec(out, tmp_path / "codec.ckpt", fresh_discriminator=False)
    with pytest.raises(RuntimeError, match="Missing key.*discriminator"):
        _lightning_load(path, muq)
    with pytest.warns(Warning, match="in the model state dict but not in the checkpoint"):
        model = _lightning_load(path, muq, strict=False)
    missing = set(model.state_dict()) - set(load_checkpoint(path)["state_dict"])
    assert len(missing) == 324 and all(k.startswith("discriminator.") for k in missing)
    torch.testing.assert_close(model.state_dict()["fc_post1.weight"], state["fc_post1.weight"], rtol=0, atol=0)


def edited(state: dict, drop=(), add=None, reshape=None) -> dict:
    s = {k: v for k, v in state.items() if k not in drop}
    s.update(add or {})
    for k, shape in (reshape or {}).items():
        s[k] = torch.zeros(shape)
    return s


@pytest.mark.parametrize("edit, message", [
    (dict(drop=["decoder.model.1.block.2.block.1.bias"]), "missing key 'decoder.model.1.block.2.block.1.bias'"),
    (dict(drop=["semantic.model.conformer.layers.0.final_layer_norm.bias"]),
     "missing key 'semantic.model.conformer.layers.0.final_layer_norm.bias'"),
    (dict(add={"fc_post3.weight": torch.zeros(2)}), "unexpected key 'fc_post3.weight'"),
    (dict(add={"encoder.block.0.scale": torch.zeros(2)}), "unexpected key 'encoder.block.0.scale'"),
    (dict(reshape={"quantizer.quantizers.5.codebook.weight": (1024, 9)}),
     "key 'quantizer.quantizers.5.codebook.weight' has shape [1024, 9], expected [1024, 8]"),
    (dict(reshape={"semantic.model.conv.linear.bias": (3,)}), "'semantic.model.conv.linear.bias' has shape [3]"),
    (dict(reshape={"generator.2.model.0.bias": (32,)}), "'generator.2.model.0.bias' differs"),
])
def test_bad_checkpoint_names_the_key(tiny_source, tmp_path, edit, message):
    d, state, _ = tiny_source
    torch.save(lightning(edited(state, **edit)), tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match=message.replace("[", r"\[").replace("]", r"\]")):
        import_muq_xcodec(tmp_path / "bad.ckpt", tmp_path / "out", muq_config=d / "muq.json")
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_discriminator_dropped_without_flag_and_flag_needs_it(tiny_source, tmp_path):
    d, state, _ = tiny_source
    report = import_muq_xcodec(d / "last.ckpt", tmp_path / "a", muq_config=d / "muq.json")
    assert "discriminator" not in report.mapped and not (tmp_path / "a" / "discriminator.safetensors").exists()
    assert any("discriminator" in reason for reason in report.dropped)
    no_disc = {k: v for k, v in state.items() if not k.startswith("discriminator.")}
    torch.save(lightning(no_disc), tmp_path / "g.ckpt")
    with pytest.raises(CheckpointError, match="no discriminator"):
        import_muq_xcodec(tmp_path / "g.ckpt", tmp_path / "b", muq_config=d / "muq.json", with_discriminator=True)
    five_mpd = {k: v for k, v in state.items() if not k.startswith("discriminator.discriminators.7.")}
    torch.save(lightning(five_mpd), tmp_path / "m.ckpt")
    with pytest.raises(CheckpointError, match="cannot map it faithfully"):
        import_muq_xcodec(tmp_path / "m.ckpt", tmp_path / "c", muq_config=d / "muq.json", with_discriminator=True)


class WritesMarker:
    """Unpickling this object would create the marker file (stands for arbitrary code in a checkpoint)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_code_is_refused_without_running_it(tiny_source, tmp_path):
    d, state, _ = tiny_source
    marker = tmp_path / "pwned"
    torch.save(lightning(state, hyper_parameters=WritesMarker(str(marker))), tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="refusing to load.*--trust-checkpoint"):
        import_muq_xcodec(tmp_path / "evil.ckpt", tmp_path / "out", muq_config=d / "muq.json")
    assert not marker.exists()
    from codec.__main__ import main

    assert main(["import-muq-xcodec", str(tmp_path / "evil.ckpt"), str(tmp_path / "out"),
                 "--muq-config", str(d / "muq.json")]) == 1
    assert not marker.exists() and not (tmp_path / "out" / "model.safetensors").exists()


def test_trust_checkpoint_allows_a_full_load(tiny_source, tmp_path):
    d, state, _ = tiny_source
    torch.save(lightning(state, hyper_parameters=argparse.Namespace(lr=1e-4)), tmp_path / "ns.ckpt")
    with pytest.raises(CheckpointError, match="refusing"):
        load_checkpoint(tmp_path / "ns.ckpt")
    report = import_muq_xcodec(tmp_path / "ns.ckpt", tmp_path / "out", muq_config=d / "muq.json",
                               trust_checkpoint=True)
    assert report.n_mapped > 0


def test_cli_import_prints_summary(tiny_source, tmp_path, capsys):
    from codec.__main__ import main

    d, _, _ = tiny_source
    assert main(["import-muq-xcodec", str(d / "last.ckpt"), str(tmp_path / "out"), "--muq-config",
                 str(d / "muq.json")]) == 0
    printed = capsys.readouterr().out
    assert "mapped" in printed and "dropped (discriminator" in printed
    assert main(["import-muq-xcodec", str(d / "missing.ckpt"), str(tmp_path / "x"), "--muq-config",
                 str(d / "muq.json")]) == 1
    assert "no such checkpoint file" in capsys.readouterr().err


def test_missing_muq_config_says_how_to_fix(tiny_source, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d, _, _ = tiny_source
    with pytest.raises(CheckpointError, match="--muq-config"):
        import_muq_xcodec(d / "last.ckpt", tmp_path / "out", muq_config="nobody/not-a-cached-model")


def test_imported_teacher_without_its_weights_is_an_error(tiny_imported, tmp_path):
    import shutil

    out, _ = tiny_imported
    for name in ("config.yaml", "model.safetensors"):
        shutil.copy(out / name, tmp_path / name)
    with pytest.raises(FileNotFoundError, match="teacher.safetensors"):
        Codec.from_pretrained(tmp_path).encode(torch.zeros(960), 24000)


def test_tokenization_stage_runs_with_the_imported_model(tiny_imported, tmp_path):
    """The tokenization job's stage (pipelines.tokenize.stage.ShardTokenizer), in process, on the imported dir."""
    from pipelines.common import shard_io as tio
    from pipelines.common.models import resolve_model
    from pipelines.tokenize.stage import ShardTokenizer

    out, _ = tiny_imported
    clip = stereo_clip(1.3, seed=3).numpy()
    buf = io.BytesIO()
    sf.write(buf, clip.T, 24000, format="WAV", subtype="FLOAT")
    shard = tmp_path / "in" / "part-000000.tar"
    shard.parent.mkdir()
    shard.write_bytes(tio.tar_bytes({"t.wav": buf.getvalue()}))
    stage = ShardTokenizer(resolve_model(str(out)).to_json(), str(tmp_path / "tok"), config_hash="0" * 16,
                           torch_threads=2)
    row = stage({"shard": np.array([str(shard)])})
    assert row["ok"].tolist() == [True], row["error"]
    with tarfile.open(tmp_path / "tok" / "part-000000.tar") as tar:
        codes = np.load(io.BytesIO(tar.extractfile("t.codes.npy").read()))
    expected = Codec.from_pretrained(out).encode(torch.from_numpy(clip), 24000)[0].numpy()
    np.testing.assert_array_equal(codes, expected)


@pytest.mark.slow
def test_full_geometry_import_matches_the_original_forward(tmp_path):
    """Full XCodec geometry (encoder 64 -> 1024, decoder 1536, 8 x 1024 RVQ) with a one-layer 1024-wide MuQ."""
    cfg = muq_config(1024, heads=16)
    state = original_state(encoder_dim=64, decoder_dim=1536, muq=cfg, seed=1)
    (tmp_path / "muq.json").write_text(json.dumps(cfg))
    torch.save(lightning(state), tmp_path / "last.ckpt")
    report = import_muq_xcodec(tmp_path / "last.ckpt", tmp_path / "out", muq_config=tmp_path / "muq.json")
    assert report.n_mapped + report.n_dropped == count_tensors(torch.load(tmp_path / "last.ckpt", weights_only=True))
    codec = Codec.from_pretrained(tmp_path / "out").configure(chunk_seconds=0.4)
    assert codec.config.model.latent_dim is None and codec.config.model.decoder_dim == 1536
    audio = stereo_clip(0.6, seed=5)
    codes = codec.encode(audio, 24000)
    expected = original_encode(state, reference_muq(state, cfg), audio, chunk_size=int(0.4 * 24000))
    torch.testing.assert_close(codes.long(), expected, rtol=0, atol=0)
    torch.testing.assert_close(codec.decode(codes), original_decode(state, expected), rtol=1e-4, atol=1e-4)
