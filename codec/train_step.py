"""One GAN training step for XCodec: discriminator update, then generator update."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codec.nn.loss import MultiScaleMelLoss, discriminator_loss, generator_loss, split_real_fake

DEFAULT_WEIGHTS: dict[str, float] = {
    "commitment": 0.25,
    "codebook": 1.0,
    "mel": 15.0,
    "adv": 1.0,
    "feature_matching": 2.0,
    "semantic": 10.0,
}


def unwrap(module: nn.Module) -> nn.Module:
    """The wrapped module of a DDP / DataParallel wrapper, else the module itself."""
    return getattr(module, "module", module)


def trainable_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Every parameter of ``module`` with ``requires_grad`` (deduplicated, in registration order)."""
    return [p for p in module.parameters() if p.requires_grad]


class GANTrainStep:
    """Callable that runs one discriminator step then one generator step.

    Both optimizers are AdamW over ALL trainable parameters of their network (fusion layers included);
    a teacher is never optimised. Both ExponentialLR schedulers are stepped after every call.

    Args:
        generator: XCodec (may be DDP-wrapped). ``forward(audio, semantic)`` -> CodecOutput.
        discriminator: Discriminator (may be DDP-wrapped). The discriminator phase runs it once on
            cat([real, fake]); the generator phase runs the unwrapped module with its parameters frozen,
            on the real audio without a graph and on the fake with one.
        sample_rate: audio rate; the mel loss is built for it.
        teacher: frozen module mapping audio [B, N] to features [B, T, Ds]; used when ``semantic`` is None.
        lr: initial learning rate of both optimizers.
        betas: AdamW betas.
        gamma: ExponentialLR decay per step.
        weights: loss weights; missing keys take :data:`DEFAULT_WEIGHTS`.
        grad_clip: max global grad norm per network (None = no clipping).
        bf16: run generator and discriminator under bf16 autocast (the VQ, teacher and losses stay fp32).
        device: device the audio is moved to.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, *, sample_rate: int,
                 teacher: nn.Module | None = None, lr: float = 1e-4, betas: tuple[float, float] = (0.8, 0.99),
                 gamma: float = 0.999996, weights: dict[str, float] | None = None,
                 grad_clip: float | None = None, bf16: bool = False, device: str | torch.device = "cpu"):
        unknown = set(weights or {}) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown loss weight(s) {sorted(unknown)}; expected keys {sorted(DEFAULT_WEIGHTS)}")
        self.generator = generator
        self.discriminator = discriminator
        self.teacher = teacher
        self.device = torch.device(device)
        self.weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        self.grad_clip = grad_clip
        self.bf16 = bf16
        self.mel_loss = MultiScaleMelLoss(sample_rate).to(self.device)
        if teacher is not None:
            teacher_params = {id(p) for p in teacher.parameters()}
            shared = [p for p in trainable_parameters(generator) + trainable_parameters(discriminator)
                      if id(p) in teacher_params]
            if shared:
                raise ValueError("the teacher's parameters must not be part of the generator or discriminator")
        self.optimizer_g = torch.optim.AdamW(trainable_parameters(generator), lr=lr, betas=betas)
        self.optimizer_d = torch.optim.AdamW(trainable_parameters(discriminator), lr=lr, betas=betas)
        self.scheduler_g = torch.optim.lr_scheduler.ExponentialLR(self.optimizer_g, gamma=gamma)
        self.scheduler_d = torch.optim.lr_scheduler.ExponentialLR(self.optimizer_d, gamma=gamma)
        self.step = 0

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    @torch.no_grad()
    def _teacher_features(self, audio: Tensor) -> Tensor:
        if self.teacher is None:
            raise ValueError("semantic features are required when no teacher was given")
        with torch.autocast(device_type=self.device.type, enabled=False):
            return self.teacher(audio.squeeze(1).float()).float()

    @contextlib.contextmanager
    def _frozen_discriminator(self) -> Iterator[nn.Module]:
        """The unwrapped discriminator with ``requires_grad`` off for the generator phase.

        Its parameters need no gradient there (they would be discarded), so backward skips their weight
        gradients and DDP has nothing to all-reduce; the flags are restored afterwards.
        """
        disc = unwrap(self.discriminator)
        params = trainable_parameters(disc)
        for p in params:
            p.requires_grad_(False)
        try:
            yield disc
        finally:
            for p in params:
                p.requires_grad_(True)

    def _clip(self, optimizer: torch.optim.Optimizer) -> float:
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if self.grad_clip is None:
            norms = [p.grad.detach().norm() for p in params]
            return float(torch.stack(norms).norm()) if norms else 0.0
        return float(torch.nn.utils.clip_grad_norm_(params, self.grad_clip))

    def __call__(self, audio: Tensor, semantic: Tensor | None = None) -> dict[str, float]:
        """Run one training step.

        Args:
            audio: [B, 1, N] real audio, N % hop == 0.
            semantic: [B, N / hop, Ds] teacher features; computed by the teacher when None.

        Returns:
            Float losses (weighted components unweighted, plus totals), grad norms and the lr used.
        """
        audio = audio.to(self.device, torch.float32)
        if semantic is None:
            semantic = self._teacher_features(audio)
        semantic = semantic.to(self.device, torch.float32)
        self.generator.train()
        self.discriminator.train()
        lr = self.optimizer_g.param_groups[0]["lr"]
        n = audio.shape[0]

        with self._autocast():
            out = self.generator(audio, semantic)
        fake = out.audio.float()

        # Discriminator phase.
        self.optimizer_d.zero_grad(set_to_none=True)
        with self._autocast():
            d_real, d_fake = split_real_fake(self.discriminator(torch.cat([audio, fake.detach()])), n)
            loss_d = discriminator_loss(d_real, d_fake)
        loss_d.backward()
        grad_norm_d = self._clip(self.optimizer_d)
        self.optimizer_d.step()

        # Generator phase: the real audio's feature maps are fixed targets (no graph), only the fake's
        # path back to the generator is differentiated.
        self.optimizer_g.zero_grad(set_to_none=True)
        with self._frozen_discriminator() as disc, self._autocast():
            with torch.no_grad():
                d_real = disc(audio)
            adv, fm = generator_loss(d_real, disc(fake))
        mel = self.mel_loss(fake, audio)
        sem = F.mse_loss(out.semantic_pred.float(), semantic)
        w = self.weights
        loss_g = (w["commitment"] * out.commitment_loss + w["codebook"] * out.codebook_loss + w["mel"] * mel
                  + w["adv"] * adv + w["feature_matching"] * fm + w["semantic"] * sem)
        loss_g.backward()
        grad_norm_g = self._clip(self.optimizer_g)
        self.optimizer_g.step()

        self.scheduler_g.step()
        self.scheduler_d.step()
        self.step += 1
        return {
            "loss_d": loss_d.item(), "loss_g": loss_g.item(), "mel": mel.item(), "adv": adv.item(),
            "feature_matching": fm.item(), "semantic": sem.item(),
            "commitment": out.commitment_loss.item(), "codebook": out.codebook_loss.item(),
            "grad_norm_g": grad_norm_g, "grad_norm_d": grad_norm_d, "lr": float(lr),
        }

    def state_dict(self) -> dict:
        """Optimizer, scheduler and step state (not the networks' weights)."""
        return {
            "optimizer_g": self.optimizer_g.state_dict(), "optimizer_d": self.optimizer_d.state_dict(),
            "scheduler_g": self.scheduler_g.state_dict(), "scheduler_d": self.scheduler_d.state_dict(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.optimizer_g.load_state_dict(state["optimizer_g"])
        self.optimizer_d.load_state_dict(state["optimizer_d"])
        self.scheduler_g.load_state_dict(state["scheduler_g"])
        self.scheduler_d.load_state_dict(state["scheduler_d"])
        self.step = int(state["step"])

