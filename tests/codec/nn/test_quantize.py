import pytest
import torch

from codec.nn.quantize import ResidualVectorQuantize

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _rvq(**kw):
    torch.manual_seed(0)
    return ResidualVectorQuantize(input_dim=16, n_codebooks=8, codebook_size=1024, codebook_dim=8, **kw)


def test_shapes_ranges_and_from_codes_match_forward_in_eval():
    rvq = _rvq().eval()
    z = torch.randn(2, 16, 5)
    for k in (1, 3, 8):
        q = rvq(z, n_quantizers=k)
        assert q.codes.shape == (2, k, 5) and q.codes.dtype == torch.int64
        assert q.latents.shape == (2, k * 8, 5)
        assert 0 <= q.codes.min() and q.codes.max() < 1024
        torch.testing.assert_close(rvq.from_codes(q.codes), q.z_q)
    with pytest.raises(ValueError):
        rvq(z, n_quantizers=9)


def test_straight_through_and_losses_have_gradients():
    rvq = _rvq(quantizer_dropout=0.0).train()
    z = torch.randn(2, 16, 5, requires_grad=True)
    q = rvq(z)
    (q.z_q.sum() + q.commitment_loss + q.codebook_loss).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    for vq in rvq.quantizers:
        assert vq.codebook.weight.grad.abs().sum() > 0
        assert vq.in_proj.parametrizations.weight.original1.grad.abs().sum() > 0
    assert q.commitment_loss > 0 and q.codebook_loss > 0


def test_quantizer_dropout_is_on_by_default_in_training_and_off_in_eval():
    """The published model trained with quantizer dropout off; ours uses random prefixes in training."""
    assert ResidualVectorQuantize().quantizer_dropout == 0.5
    rvq = _rvq(quantizer_dropout=1.0)
    z = torch.randn(16, 16, 4)
    torch.manual_seed(1)
    with torch.no_grad():
        q_train = rvq.train()(z)
        q_eval = rvq.eval()(z)
        torch.testing.assert_close(q_train.codes, q_eval.codes)  # codes of every layer are still computed
        n_used = []
        for b in range(16):
            matches = [k for k in range(1, 9)
                       if torch.allclose(rvq.from_codes(q_eval.codes[b:b + 1, :k]), q_train.z_q[b:b + 1], atol=1e-5)]
            assert matches, f"item {b} is not a prefix decode"
            n_used.append(matches[0])
    assert min(n_used) < 8 and len(set(n_used)) > 2
    torch.testing.assert_close(q_eval.z_q, rvq.from_codes(q_eval.codes))


def test_runs_in_fp32_under_bf16_autocast():
    rvq = _rvq().eval()
    z = torch.randn(1, 16, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = rvq(z.bfloat16())
    assert q.z_q.dtype == torch.float32 and q.commitment_loss.dtype == torch.float32
