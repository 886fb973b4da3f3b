import copy

import pytest
import torch

from codec.model.xcodec import XCodec
from codec.nn.layers import fold_weight_norm

pytestmark = pytest.mark.usefixtures("single_torch_thread")


TINY = dict(encoder_dim=8, decoder_dim=64, semantic_dim=32)


def _tiny(**kw):
    torch.manual_seed(0)
    return XCodec(**{**TINY, **kw})


def test_ten_seconds_codes_and_prefix_decoding():
    model = _tiny(decoder_dim=16).eval()
    assert model.hop_length == 960 and model.frame_rate == 25.0
    torch.manual_seed(1)
    audio = 0.1 * torch.randn(1, 1, 240000)
    semantic = torch.randn(1, 250, 32)
    with torch.no_grad():
        codes = model.encode(audio, semantic)
        assert codes.shape == (1, 8, 250) and codes.dtype == torch.int64
        assert codes.min() >= 0 and codes.max() < 1024
        for k in range(1, 9):
            audio_k = model.decode(codes[:, :k])
            assert audio_k.shape == (1, 1, 240000) and audio_k.abs().max() <= 1.0


def test_forward_audio_matches_decode_of_codes_in_eval():
    model = _tiny().eval()
    audio, semantic = 0.1 * torch.randn(2, 1, 4800), torch.randn(2, 5, 32)
    with torch.no_grad():
        out = model(audio, semantic, n_quantizers=3)
        assert out.audio.shape == (2, 1, 4800) and out.semantic_pred.shape == (2, 5, 32)
        assert out.codes.shape == (2, 3, 5)
        torch.testing.assert_close(model.decode(out.codes), out.audio, atol=1e-5, rtol=1e-4)


def test_bad_shapes_fail_with_a_message():
    model = _tiny()
    with pytest.raises(ValueError, match="960"):
        model(torch.randn(1, 1, 1000), torch.randn(1, 1, 32))
    with pytest.raises(ValueError, match="semantic"):
        model(torch.randn(1, 1, 1920), torch.randn(1, 3, 32))


def test_quantizer_dropout_default_is_on():
    assert XCodec(**TINY).quantizer.quantizer_dropout == 0.5


def test_init_touches_only_xcodec_modules():
    """The published model's apply(init_weights) re-initialised the MuQ teacher's convs."""
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3), torch.nn.Conv2d(4, 4, 3), torch.nn.Linear(4, 4))
    before = copy.deepcopy(teacher.state_dict())
    model = XCodec(**TINY)
    model.reset_parameters()
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    # The teacher is never a submodule, so nothing that walks XCodec's modules can reach it.
    names = {n for n, _ in model.named_children()}
    assert names == {"encoder", "fc_prior", "quantizer", "fc_post_s", "fc_post_a", "decoder"}
    conv = model.decoder.model[0]
    assert abs(conv.weight.std().item() - 0.02) < 0.005  # our init did run on our own convs


def test_fold_weight_norm_preserves_decoding():
    model = _tiny().eval()
    codes = torch.randint(0, 1024, (1, 8, 4))
    with torch.no_grad():
        before = model.decode(codes)
        fold_weight_norm(model)
        after = model.decode(codes)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("seed", range(4))
def test_zero_bias_init_leaves_no_dc_offset_on_the_output(seed):
    """No loss sees DC (the mel filterbanks start at 0 Hz with zero weight, the discriminators subtract the
    mean), so an offset present at init stays. PyTorch's random conv biases put one on the waveform: 0.495
    (seed 0), -0.083, 0.000, -0.287 (seeds 1-3) on the tiny preset; zero biases leave none, for every seed."""
    audio, semantic = 0.1 * torch.randn(2, 1, 48000), torch.randn(2, 50, 32)
    offsets = {}
    for init in ("default", "zero_bias"):
        torch.manual_seed(seed)
        model = XCodec(**TINY, init=init)
        assert model.init == init
        with torch.no_grad():
            out = model(audio, semantic).audio
        offsets[init] = out.mean(dim=-1).abs().max().item()
        if init == "zero_bias":
            convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))]
            assert convs and all(not m.bias.any() for m in convs if m.bias is not None)
    assert offsets["zero_bias"] < 1e-3, offsets
    if seed == 0:
        assert offsets["default"] > 0.1, offsets  # the offset the tiny preset trained with before


def test_dc_block_keeps_an_offset_the_decoder_learns_off_the_waveform():
    """Zero biases start without an offset, but nothing in training pulls one back: on real music the tiny
    preset's output drifted to |mean| ~0.1 within 125 steps (about half its energy). With the DC block the
    last conv's bias, where such an offset lives, cannot reach the waveform."""
    audio, semantic = 0.1 * torch.randn(2, 1, 48000), torch.randn(2, 50, 32)
    offsets = {}
    for seconds in (0.0, 0.2):
        model = _tiny(init="zero_bias", dc_block_seconds=seconds).eval()
        last_conv = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Conv1d)][-1]
        with torch.no_grad():
            last_conv.bias.fill_(0.3)  # the drift, put in by hand
            offsets[seconds] = model(audio, semantic).audio.mean(dim=-1).abs().max().item()
    assert offsets[0.0] > 0.25 and offsets[0.2] < 1e-3, offsets
