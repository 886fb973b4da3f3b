import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from utils import free_port

from codec.model.discriminator import Discriminator
from codec.model.xcodec import XCodec
from codec.train_step import GANTrainStep

SEM_DIM = 16


class FrozenConvTeacher(torch.nn.Module):
    """A tiny stand-in teacher: one strided conv, frozen. [B, N] -> [B, N/960, SEM_DIM]."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(1, SEM_DIM, kernel_size=960, stride=960)
        self.requires_grad_(False)
        self.eval()

    def forward(self, audio):
        return self.conv(audio.reshape(audio.shape[0], 1, -1)).transpose(1, 2)


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _nets(quantizer_dropout=0.0):
    torch.manual_seed(0)
    gen = XCodec(encoder_dim=4, decoder_dim=16, semantic_dim=SEM_DIM, quantizer_dropout=quantizer_dropout)
    disc = Discriminator(24000, period_channels=2, stft_channels=2)
    return gen, disc


def _audio(batch=2, frames=3):
    torch.manual_seed(1)
    return 0.2 * torch.randn(batch, 1, 960 * frames)


def _trainable(module):
    return [p for p in module.parameters() if p.requires_grad]


def test_one_step_updates_every_parameter_and_never_the_teacher():
    gen, disc = _nets()
    teacher = FrozenConvTeacher()
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    step = GANTrainStep(gen, disc, sample_rate=24000, teacher=teacher, grad_clip=100.0)

    # Optimizers cover exactly the trainable parameters (fusion layers included), teacher excluded.
    opt_g = {id(p) for g in step.optimizer_g.param_groups for p in g["params"]}
    opt_d = {id(p) for g in step.optimizer_d.param_groups for p in g["params"]}
    assert opt_g == {id(p) for p in _trainable(gen)}
    assert opt_d == {id(p) for p in _trainable(disc)}
    for layer in (gen.fc_prior, gen.fc_post_s, gen.fc_post_a):
        assert all(id(p) in opt_g for p in layer.parameters())
    assert not ({id(p) for p in teacher.parameters()} & (opt_g | opt_d))

    # Record the gradient each optimizer sees when it steps.
    seen = {}

    def recorder(name):
        def hook(opt, args, kwargs):
            seen[name] = {id(p): p.grad.detach().clone() if p.grad is not None else None
                          for g in opt.param_groups for p in g["params"]}
        return hook

    step.optimizer_g.register_step_pre_hook(recorder("g"))
    step.optimizer_d.register_step_pre_hook(recorder("d"))
    before_g = {n: p.detach().clone() for n, p in gen.named_parameters()}
    before_d = {n: p.detach().clone() for n, p in disc.named_parameters()}

    out = step(_audio())

    expected = {"loss_d", "loss_g", "mel", "adv", "feature_matching", "semantic", "commitment", "codebook", "lr"}
    assert expected <= set(out) and all(isinstance(v, float) for v in out.values())
    for name, module, before in (("g", gen, before_g), ("d", disc, before_d)):
        for n, p in module.named_parameters():
            grad = seen[name][id(p)]
            assert grad is not None and grad.abs().sum() > 0, f"{name}: no gradient for {n}"
            assert not torch.equal(p.detach(), before[n]), f"{name}: {n} did not change"
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k
    assert all(p.grad is None for p in teacher.parameters())


def test_lr_decays_every_step_and_state_round_trips():
    gen, disc = _nets(quantizer_dropout=0.5)
    lr, gamma = 1e-3, 0.9
    step = GANTrainStep(gen, disc, sample_rate=24000, lr=lr, gamma=gamma)
    audio, semantic = _audio(batch=1), torch.randn(1, 3, SEM_DIM)
    lrs = [step(audio, semantic)["lr"] for _ in range(3)]
    assert lrs == pytest.approx([lr, lr * gamma, lr * gamma**2])
    for opt in (step.optimizer_g, step.optimizer_d):
        assert opt.param_groups[0]["lr"] == pytest.approx(lr * gamma**3)
    assert step.step == 3

    state = step.state_dict()
    gen2, disc2 = _nets(quantizer_dropout=0.5)
    restored = GANTrainStep(gen2, disc2, sample_rate=24000, lr=lr, gamma=gamma)
    restored.load_state_dict(state)
    assert restored.step == 3
    assert restored.optimizer_g.param_groups[0]["lr"] == pytest.approx(lr * gamma**3)
    assert restored.scheduler_d.last_epoch == 3
    assert len(restored.optimizer_g.state) == len(step.optimizer_g.state) > 0


def test_bf16_step_runs_with_fp32_quantizer():
    gen, disc = _nets()
    step = GANTrainStep(gen, disc, sample_rate=24000, bf16=True)
    out = step(_audio(batch=1), torch.randn(1, 3, SEM_DIM))
    assert all(v == v for v in out.values())  # finite, not NaN
    assert all(p.dtype == torch.float32 for p in gen.parameters())


def test_bad_weight_key_and_missing_teacher_fail():
    gen, disc = _nets()
    with pytest.raises(ValueError, match="mell"):
        GANTrainStep(gen, disc, sample_rate=24000, weights={"mell": 1.0})
    with pytest.raises(ValueError, match="teacher"):
        GANTrainStep(gen, disc, sample_rate=24000)(_audio(batch=1))


@pytest.mark.parametrize("find_unused", [False, True])
def test_step_with_ddp_wrapped_networks(find_unused):
    gen, disc = _nets(quantizer_dropout=0.5)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        ddp_g = DDP(gen, find_unused_parameters=find_unused)
        ddp_d = DDP(disc, find_unused_parameters=find_unused)
        step = GANTrainStep(ddp_g, ddp_d, sample_rate=24000, teacher=FrozenConvTeacher())
        assert {id(p) for g in step.optimizer_g.param_groups for p in g["params"]} == {
            id(p) for p in _trainable(gen)}
        before = gen.fc_prior.weight.detach().clone()
        for _ in range(2):
            out = step(_audio(batch=1))
        assert out["loss_g"] == out["loss_g"]
        assert not torch.equal(gen.fc_prior.weight, before)
    finally:
        dist.destroy_process_group()


def test_generator_phase_gradient_equals_the_joint_real_fake_pass_and_leaves_the_discriminator_alone():
    """The generator phase's shortcut (real feature maps without a graph, discriminator frozen) must give
    the generator exactly the gradient of the plain formulation (one discriminator pass on cat([real, fake])
    with every parameter trainable), and add nothing to the discriminator's gradients."""
    import copy

    from codec.nn.loss import generator_loss, split_real_fake

    gen, disc = _nets()
    audio, semantic = _audio(), torch.randn(2, 3, SEM_DIM)
    step = GANTrainStep(gen, disc, sample_rate=24000, grad_clip=None)
    seen = {}

    def after_d_step(opt, args, kwargs):
        seen["d_phase_grads"] = [p.grad.detach().clone() for p in disc.parameters()]
        seen["disc"] = copy.deepcopy(disc)  # the discriminator the generator phase runs

    def before_g_step(opt, args, kwargs):
        seen["grads"] = {n: p.grad.detach().clone() for n, p in gen.named_parameters()}
        seen["g_phase_disc_grads"] = [p.grad.detach().clone() for p in disc.parameters()]

    gen_before = copy.deepcopy(gen)  # the generator's weights until its own update
    step.optimizer_d.register_step_post_hook(after_d_step)
    step.optimizer_g.register_step_pre_hook(before_g_step)
    step(audio, semantic)

    assert all(p.requires_grad for p in disc.parameters())
    for during_g, after_d in zip(seen["g_phase_disc_grads"], seen["d_phase_grads"], strict=True):
        assert torch.equal(during_g, after_d)

    ref_disc = seen["disc"]
    ref_disc.zero_grad(set_to_none=True)
    out = gen_before(audio, semantic)
    d_real, d_fake = split_real_fake(ref_disc(torch.cat([audio, out.audio])), audio.shape[0])
    adv, fm = generator_loss(d_real, d_fake)
    w = step.weights
    loss = (w["commitment"] * out.commitment_loss + w["codebook"] * out.codebook_loss
            + w["mel"] * step.mel_loss(out.audio, audio) + w["adv"] * adv + w["feature_matching"] * fm
            + w["semantic"] * torch.nn.functional.mse_loss(out.semantic_pred, semantic))
    loss.backward()
    for n, p in gen_before.named_parameters():
        torch.testing.assert_close(seen["grads"][n], p.grad, rtol=1e-4, atol=1e-6, msg=n)
