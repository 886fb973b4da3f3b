"""The frozen MuQ teacher: frame geometry, layer selection, frozen-ness and seeded random construction."""

from __future__ import annotations

import random

import pytest
import torch

from codec.model.teacher import MuQTeacher


@pytest.fixture(scope="module")
def teacher() -> MuQTeacher:
    return MuQTeacher.random(dim=32, depth=2, heads=2, conv_dim=16, seed=0)


def _audio(seconds: float, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, int(seconds * 24000), generator=g)


def test_frames_are_samples_over_960(teacher):
    for n in (960 * 25, 960 * 37):
        feats = teacher(_audio(n / 24000))
        assert feats.shape == (2, n // 960, 32)
        assert feats.dtype == torch.float32
        assert torch.isfinite(feats).all()
    assert teacher(_audio(1.0)[:, None]).shape == (2, 25, 32)  # [B, 1, N] accepted too


def test_rejects_lengths_off_the_hop_and_multichannel(teacher):
    with pytest.raises(ValueError, match="multiple of 960"):
        teacher(torch.zeros(1, 1000))
    with pytest.raises(ValueError, match="mono"):
        teacher(torch.zeros(1, 2, 960))


def test_frozen_and_always_eval(teacher):
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    x = _audio(1.0).requires_grad_(True)
    assert not teacher(x).requires_grad


def test_fp32_under_autocast(teacher):
    x = _audio(1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = teacher(x)
    assert feats.dtype == torch.float32
    torch.testing.assert_close(feats, teacher(x))


def test_layer_selection(teacher):
    x = _audio(1.0, batch=1)
    first = MuQTeacher(teacher.muq, layer=0)(x)
    last = teacher(x)
    assert not torch.allclose(first, last)
    torch.testing.assert_close(MuQTeacher(teacher.muq, layer=2)(x), last)
    with pytest.raises(ValueError, match="layer"):
        MuQTeacher(teacher.muq, layer=5)


def test_random_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    random.seed(7)
    expected_torch, expected_py = torch.rand(3), random.random()
    torch.manual_seed(123)
    random.seed(7)
    a = MuQTeacher.random(dim=16, depth=1, heads=2, conv_dim=8, seed=3)
    assert torch.equal(torch.rand(3), expected_torch) and random.random() == expected_py
    b = MuQTeacher.random(dim=16, depth=1, heads=2, conv_dim=8, seed=3)
    c = MuQTeacher.random(dim=16, depth=1, heads=2, conv_dim=8, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
