import numpy as np
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


def test_defences_off_keep_the_original_state_dict_keys():
    """Imported checkpoints build the quantizer with both defences off: no extra buffers."""
    plain = _rvq()
    assert not any("initialized" in k or "unused_steps" in k for k in plain.state_dict())
    defended = _rvq(init_from_data=True, dead_code_steps=3)
    extra = set(defended.state_dict()) - set(plain.state_dict())
    assert extra == {f"quantizers.{i}.{b}" for i in range(8) for b in ("initialized", "unused_steps")}


def test_data_init_puts_codes_on_distinct_latents_of_the_first_training_batch():
    rvq = _rvq(init_from_data=True, quantizer_dropout=0.0)
    z = torch.randn(2, 16, 50) + 5.0  # far from the N(0, 1) codebook's directions on average
    with torch.no_grad():
        rvq.eval()(z)  # eval: no maintenance
        assert not bool(rvq.quantizers[0].initialized)
        before = rvq.quantizers[0].codebook.weight.clone()
        rvq.train()(z)
        vq = rvq.quantizers[0]
        z_e = vq.in_proj(z).transpose(1, 2).reshape(-1, 8)
        distances = torch.cdist(vq.codebook.weight[:100], z_e)
    assert bool(vq.initialized)
    assert distances.min(dim=1).values.max() < 1e-2  # (cdist rounding) the first 100 codes are the batch's 100 frames ...
    assert len(set(distances.argmin(dim=1).tolist())) == 100  # ... each a different one
    torch.testing.assert_close(vq.codebook.weight[100:], before[100:])  # one code per frame at most


def test_dead_codes_restart_on_batch_latents_at_most_one_per_frame():
    rvq = _rvq(dead_code_steps=2, quantizer_dropout=0.0).train()
    vq = rvq.quantizers[0]
    z = torch.randn(1, 16, 4)
    with torch.no_grad():
        before = vq.codebook.weight.clone()
        used = set(rvq(z).codes[0, 0].tolist())
        rvq(z)  # same codes used again: every other code is now unused for 2 steps
        assert vq.unused_steps.max() == 2 and all(vq.unused_steps[c] == 0 for c in used)
        rvq(z)  # restarts happen before this step's lookup: 4 frames -> 4 codes move
        changed = (vq.codebook.weight != before).any(dim=1)
        assert changed.sum() == 4 and not any(changed[c] for c in used)
        z_e = vq.in_proj(z).transpose(1, 2).reshape(-1, 8)
        assert torch.cdist(vq.codebook.weight[changed], z_e).min(dim=1).values.max() < 1e-2
        for _ in range(300):  # the other dead codes move over the next steps
            rvq(z)
    assert (vq.codebook.weight != before).any(dim=1).sum() >= 1024 - len(used) - 8


def _ddp_worker(rank: int, world: int, port: int, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # same init on every rank, as DDP requires
        rvq = ResidualVectorQuantize(input_dim=16, n_codebooks=2, codebook_size=64, codebook_dim=4,
                                     quantizer_dropout=0.0, init_from_data=True, dead_code_steps=1).train()
        torch.manual_seed(100 + rank)  # ranks see different data and draw different random numbers
        for _ in range(3):
            with torch.no_grad():
                rvq(torch.randn(2, 16, 8) * (1 + rank))
        queue.put((rank, {k: v.numpy().copy() for k, v in rvq.state_dict().items()}))  # by value, not shared
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # spawns two gloo processes (~1 min on a loaded 2-core machine)
def test_codebook_maintenance_keeps_ddp_ranks_identical():
    """Ranks with different data take the same restart decisions and end with identical codebooks."""
    import torch.multiprocessing as mp
    from utils import free_port

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    states = dict(queue.get(timeout=600) for _ in procs)  # spawn + import torch is slow on a loaded machine
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for key in states[0]:
        np.testing.assert_array_equal(states[0][key], states[1][key], err_msg=key)
    assert bool(states[0]["quantizers.0.initialized"])
