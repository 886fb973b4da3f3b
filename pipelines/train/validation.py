"""Validation and model export run by rank 0 of the training loop.

Validation encodes the held-out excerpts (the first ``loader.val_batches * loader.val_batch_size``
validation segments, read once and kept) and asks :func:`codec.diagnostics.evaluate_learning` whether the
codec learns. Metrics (logged at the training step, names from ``LearningReport.as_metrics("val/")``):

* ``val/codes_used_l{k}``, ``val/usage_l{k}``, ``val/perplexity_l{k}``: per RVQ layer k;
* ``val/mel_nq{n}``, ``val/si_sdr_nq{n}``, ``val/identification_nq{n}`` for n in ``schedule.val_quantizers``;
* ``val/constant_codes_mel``: the decoder fed one fixed code per layer (what codes carrying nothing give);
* ``val/collapsed_layers``: how many layers have a perplexity below ``schedule.collapse_perplexity_floor``.

A collapse is also a warning in the log (layers and perplexities) and the run tag ``codec.collapsed_layers``
(e.g. ``"1,2,8"``), deleted again when every layer is back above the floor. Samples: original and
reconstructed wavs plus a spectrogram comparison PNG under ``samples/step_XXXXXXX/``.
"""

from __future__ import annotations

import copy
import itertools
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import soundfile as sf
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from codec.diagnostics import LearningReport, collapsed_layers, evaluate_learning
from codec.nn.loss import MultiScaleMelLoss
from pipelines.common.tracking import RunLogger

logger = logging.getLogger(__name__)


def spectrogram_png(original: np.ndarray, reconstruction: np.ndarray, sample_rate: int, path: str | Path,
                    title: str = "") -> Path:
    """Save a two-row log-magnitude spectrogram comparison (original above, reconstruction below)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    for ax, audio, label in zip(axes, (original, reconstruction), ("original", "reconstruction"), strict=True):
        x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        spec = torch.stft(x, n_fft=1024, hop_length=256, window=torch.hann_window(1024), return_complex=True)
        db = 20 * spec.abs().clamp(min=1e-5).log10()
        extent = (0, len(audio) / sample_rate, 0, sample_rate / 2000)
        ax.imshow(db.numpy(), origin="lower", aspect="auto", extent=extent, vmin=-100, vmax=max(float(db.max()), -90))
        ax.set_ylabel(f"{label}\nkHz")
    axes[-1].set_xlabel("seconds")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)


COLLAPSE_TAG = "codec.collapsed_layers"


class Validator:
    """Validation on rank 0 over the first ``loader.val_batches * loader.val_batch_size`` validation rows.

    The excerpts and their reference mel spectrograms are read once (the validation set is fixed) and
    reused at every validation.

    Args:
        cfg: the training config.
        device: where the generator lives.
    """

    def __init__(self, cfg: DictConfig, device: torch.device):
        self.cfg = cfg
        self.device = device
        self.sample_rate = int(cfg.codec.model.sample_rate)
        self.quantizers = tuple(sorted({int(q) for q in cfg.schedule.val_quantizers}))
        self.floor = float(cfg.schedule.collapse_perplexity_floor)
        self.batch_size = int(cfg.loader.val_batch_size)
        self.mel = MultiScaleMelLoss(self.sample_rate).to(device)
        self.excerpts: dict[str, Tensor] = {}
        self.reference_mels: list[Tensor] | None = None
        self.collapsed: list[int] | None = None  # None: not checked yet in this process

    def load_excerpts(self, dataset: Any) -> dict[str, Tensor]:
        """``{"audio": [N,1,S], "semantic": [N,T,Ds]}`` on the device, read from ``dataset`` on the first call."""
        if not self.excerpts:
            batches = dataset.iter_torch_batches(batch_size=self.batch_size, device=self.device, dtypes=torch.float32)
            rows = list(itertools.islice(batches, int(self.cfg.loader.val_batches)))
            if not rows:
                raise RuntimeError("the validation dataset is empty")
            self.excerpts = {k: torch.cat([b[k] for b in rows]) for k in ("audio", "semantic")}
            if self.excerpts["audio"].shape[0] < 2:
                raise RuntimeError("validation needs >= 2 excerpts (identification compares them); got "
                                   f"{self.excerpts['audio'].shape[0]}: raise loader.val_batch_size or "
                                   "data.val_fraction")
            self.reference_mels = self.mel.spectrograms(self.excerpts["audio"])
        return self.excerpts

    def report(self, generator: nn.Module, dataset: Any) -> LearningReport:
        """:func:`codec.diagnostics.evaluate_learning` on the validation excerpts."""
        x = self.load_excerpts(dataset)
        return evaluate_learning(generator, x["audio"], x["semantic"], n_qs=self.quantizers, mel=self.mel,
                                 reference_mels=self.reference_mels, batch_size=self.batch_size)

    def metrics(self, report: LearningReport) -> dict[str, float]:
        """The report as ``val/...`` metrics, plus the collapsed-layer count and system load."""
        metrics = report.as_metrics(prefix="val/")
        metrics["val/collapsed_layers"] = float(len(collapsed_layers(report.perplexity, self.floor)))
        vm = psutil.virtual_memory()
        metrics["system/memory_used_gb"] = (vm.total - vm.available) / 2**30
        metrics["system/cpu_percent"] = psutil.cpu_percent()
        return metrics

    def check_collapse(self, perplexity: list[float], tracker: RunLogger | None, step: int) -> list[int]:
        """Warn and tag the run when layers fall below the perplexity floor; delete the tag on recovery.

        Returns:
            The collapsed layers (numbered from 1), empty when all are healthy.
        """
        collapsed = collapsed_layers(perplexity, self.floor)
        if collapsed:
            logger.warning("step %d: codebook collapse: layer(s) %s below perplexity %g (perplexity %s)", step,
                           collapsed, self.floor, ", ".join(f"L{k} {perplexity[k - 1]:.2f}" for k in collapsed))
            if tracker is not None and collapsed != self.collapsed:
                tracker.set_tags({COLLAPSE_TAG: ",".join(map(str, collapsed))})
        elif self.collapsed is None or self.collapsed:
            if self.collapsed:
                logger.info("step %d: every layer is back above perplexity %g", step, self.floor)
            if tracker is not None:  # also clears a tag left by an earlier attempt of a resumed run
                tracker.delete_tag(COLLAPSE_TAG)
        self.collapsed = collapsed
        return collapsed

    @torch.no_grad()
    def samples(self, generator: nn.Module, n: int) -> tuple[Tensor, Tensor]:
        """The first ``n`` excerpts [n,1,S] and their reconstructions with the most quantizers (on CPU)."""
        audio, semantic = self.excerpts["audio"][:n], self.excerpts["semantic"][:n]
        was_training = generator.training
        generator.eval()
        try:
            recon = generator.decode(generator.encode(audio, semantic)[:, :self.quantizers[-1]])
        finally:
            generator.train(was_training)
        return audio.cpu(), recon.float().cpu()

    def run(self, generator: nn.Module, dataset: Any, tracker: RunLogger | None, step: int) -> dict[str, float]:
        """Compute and log validation metrics, the collapse check and audio / spectrogram samples at ``step``."""
        report = self.report(generator, dataset)
        metrics = self.metrics(report)
        self.check_collapse(report.perplexity, tracker, step)
        logger.info("step %d validation: %s", step, {k: round(v, 4) for k, v in metrics.items()})
        if tracker is None:
            return metrics
        tracker.log_metrics(metrics, step)
        n = min(int(self.cfg.schedule.num_audio_samples), report.n_excerpts)
        if n:
            audio, recon = self.samples(generator, n)
            with tempfile.TemporaryDirectory() as tmp:
                q = self.quantizers[-1]
                for i in range(n):
                    orig, rec = audio[i, 0].numpy(), recon[i, 0].clamp(-1, 1).numpy()
                    sf.write(f"{tmp}/sample{i}_original.wav", orig, self.sample_rate, subtype="PCM_16")
                    sf.write(f"{tmp}/sample{i}_reconstruction_q{q}.wav", rec, self.sample_rate, subtype="PCM_16")
                    spectrogram_png(orig, rec, self.sample_rate, f"{tmp}/sample{i}_spectrogram.png",
                                    title=f"step {step}, {q} quantizers")
                tracker.log_artifacts(tmp, f"samples/step_{step:07d}")
        return metrics


def export_and_log_model(generator: nn.Module, cfg: DictConfig, tracker: RunLogger, step: int) -> str | None:
    """Save the generator with ``Codec.save_pretrained`` and log it as an MLflow model; register it.

    Skipped when this run already logged the model of this step (a resumed, finished run).

    Returns:
        The registered ``models:/NAME/VERSION`` (or ``models:/<model_id>``), None when skipped.
    """
    from codec.inference import Codec
    from pipelines.train.init import teacher_weights

    run = tracker.client.get_run(tracker.run_id)
    if run.data.tags.get("final_model_step") == str(step):
        logger.info("model of step %d already logged (%s)", step, run.data.tags.get("registered_model"))
        return None
    codec = Codec(copy.deepcopy(generator).cpu(), cfg.codec, name=cfg.run.name, teacher_weights=teacher_weights(cfg))
    with tempfile.TemporaryDirectory() as tmp:
        codec.save_pretrained(tmp)
        uri = tracker.log_model_dir(tmp, name="codec", registered_name=cfg.tracking.register_name,
                                    alias=cfg.tracking.alias, tags={"step": str(step), "run_name": cfg.run.name})
    tracker.set_tags({"final_model_step": step, "final_model_uri": uri})
    logger.info("logged the model of step %d as %s", step, uri)
    return uri
