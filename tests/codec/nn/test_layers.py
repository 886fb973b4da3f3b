import pytest
import torch
from torch.nn.utils import parametrize

from codec.nn.layers import (
    DCBlock,
    Snake1d,
    WNConv1d,
    WNConvTranspose1d,
    fold_weight_norm,
    init_weight_normed_,
)

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_snake_is_identity_plus_periodic_term():
    torch.manual_seed(0)
    snake = Snake1d(3)
    with torch.no_grad():
        snake.alpha.copy_(torch.tensor([0.5, 1.0, 2.0]).view(1, 3, 1))
    x = torch.randn(2, 3, 11)
    a = snake.alpha
    torch.testing.assert_close(snake(x), x + torch.sin(a * x) ** 2 / a)


def test_fold_weight_norm_keeps_outputs_and_removes_parametrizations():
    torch.manual_seed(0)
    net = torch.nn.Sequential(WNConv1d(2, 4, 3, padding=1), Snake1d(4), WNConvTranspose1d(4, 2, 4, stride=2, padding=1))
    for m in net:
        if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            init_weight_normed_(m, std=0.3)
    x = torch.randn(1, 2, 16)
    before = net(x)
    fold_weight_norm(net)
    assert not any(parametrize.is_parametrized(m) for m in net.modules())
    torch.testing.assert_close(net(x), before)


def test_init_sets_effective_weight_of_weight_normed_conv():
    torch.manual_seed(0)
    conv = WNConv1d(64, 64, 7)
    init_weight_normed_(conv, std=0.02)
    assert abs(conv.weight.std().item() - 0.02) < 0.003
    assert torch.count_nonzero(conv.bias) == 0


def test_dc_block_removes_offset_and_drift_and_keeps_the_music_band():
    rate = 24000
    t = torch.arange(2 * rate) / rate
    music = 0.2 * torch.sin(2 * torch.pi * 40 * t) + 0.1 * torch.sin(2 * torch.pi * 1000 * t)
    offset = 0.3 + 0.2 * torch.sin(2 * torch.pi * 0.5 * t)  # what the tiny decoder drifted to: DC + a slow wander
    out = DCBlock(window=int(0.2 * rate) + 1)((music + offset).view(1, 1, -1)).view(-1)
    inner = slice(rate // 2, -rate // 2)
    assert (music + offset)[inner].mean().abs() > 0.25
    assert out[inner].mean().abs() < 1e-3
    err = (out - music)[inner].pow(2).mean().sqrt() / music[inner].pow(2).mean().sqrt()
    assert err < 0.05, err  # 40 Hz bass and 1 kHz pass (the window's cut-off is 5 Hz)


def test_dc_block_on_a_chunk_with_half_a_window_of_context_matches_the_whole_signal():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 5000) + 0.5
    block = DCBlock(window=201)
    whole = block(x)
    torch.testing.assert_close(block(x[..., 1000 - 100: 3000 + 100])[..., 100:-100], whole[..., 1000:3000],
                               atol=1e-6, rtol=1e-5)
    assert not torch.allclose(block(x[..., 1000:3000])[..., :100], whole[..., 1000:1100], atol=1e-3)


def test_dc_block_passes_gradients_without_a_dc_component():
    x = torch.randn(1, 1, 400, requires_grad=True)
    DCBlock(window=101)(x)[..., 150:250].sum().backward()
    assert x.grad.abs().sum() > 0 and x.grad.sum().abs() < 1e-5  # a constant shift of x changes nothing
