"""Validation and model export run by rank 0 of the training loop.

Validation metrics (logged at the training step): multi-scale mel distance with the first 1 / 2 / 4 / 8
RVQ layers (``val/mel_distance_q{n}``, :class:`codec.nn.loss.MultiScaleMelLoss`), and per RVQ layer the
fraction of codes used and the code perplexity (``val/codebook_usage_l{k}``,
``val/codebook_perplexity_l{k}``). Samples: original and reconstructed wavs plus a spectrogram comparison
PNG under ``samples/step_XXXXXXX/``.
"""

from __future__ import annotations

import copy
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

from codec.metrics import codebook_counts, codebook_stats  # shared with jobs/evaluate.py
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


class Validator:
    """Validation on rank 0 over the first ``data.val_batches`` batches of the validation dataset.

    Args:
        cfg: the training config.
        device: where the generator lives.
    """

    def __init__(self, cfg: DictConfig, device: torch.device):
        self.cfg = cfg
        self.device = device
        m = cfg.codec.model
        self.sample_rate = int(m.sample_rate)
        self.n_codebooks = int(m.n_codebooks)
        self.codebook_size = int(m.codebook_size)
        self.quantizers = sorted({int(q) for q in cfg.schedule.val_quantizers})
        self.mel = MultiScaleMelLoss(self.sample_rate).to(device)

    @torch.no_grad()
    def metrics(self, generator: nn.Module, dataset: Any) -> tuple[dict[str, float], dict[str, Tensor]]:
        """Validation metrics and the first batch's audio / reconstruction ([B,1,N] tensors on CPU)."""
        was_training = generator.training
        generator.eval()
        sums = {q: 0.0 for q in self.quantizers}
        counts = torch.zeros(self.n_codebooks, self.codebook_size, dtype=torch.long)
        n_items, first = 0, {}
        try:
            batches = dataset.iter_torch_batches(batch_size=int(self.cfg.loader.val_batch_size), device=self.device,
                                                 dtypes=torch.float32)
            for i, batch in enumerate(batches):
                if i >= self.cfg.loader.val_batches:
                    break
                audio, semantic = batch["audio"], batch["semantic"]
                b = audio.shape[0]
                for q in self.quantizers:
                    out = generator(audio, semantic, n_quantizers=q)
                    sums[q] += float(self.mel(out.audio, audio)) * b
                    if q == self.quantizers[-1]:
                        if not first:
                            first = {"audio": audio.cpu(), "reconstruction": out.audio.float().cpu()}
                        counts[:out.codes.shape[1]] += codebook_counts(out.codes, self.codebook_size)
                n_items += b
        finally:
            generator.train(was_training)
        if n_items == 0:
            raise RuntimeError("the validation dataset is empty")
        metrics = {f"val/mel_distance_q{q}": s / n_items for q, s in sums.items()}
        usage, perplexity = codebook_stats(counts)
        for k in range(min(self.quantizers[-1], self.n_codebooks)):
            metrics[f"val/codebook_usage_l{k + 1}"] = float(usage[k])
            metrics[f"val/codebook_perplexity_l{k + 1}"] = float(perplexity[k])
        vm = psutil.virtual_memory()
        metrics["system/memory_used_gb"] = (vm.total - vm.available) / 2**30
        metrics["system/cpu_percent"] = psutil.cpu_percent()
        return metrics, first

    def run(self, generator: nn.Module, dataset: Any, tracker: RunLogger | None, step: int) -> dict[str, float]:
        """Compute and log validation metrics and audio / spectrogram samples at ``step``."""
        metrics, first = self.metrics(generator, dataset)
        if tracker is None:
            return metrics
        tracker.log_metrics(metrics, step)
        n = min(int(self.cfg.schedule.num_audio_samples), first["audio"].shape[0] if first else 0)
        if n:
            with tempfile.TemporaryDirectory() as tmp:
                q = self.quantizers[-1]
                for i in range(n):
                    orig = first["audio"][i, 0].numpy()
                    recon = first["reconstruction"][i, 0].clamp(-1, 1).numpy()
                    sf.write(f"{tmp}/sample{i}_original.wav", orig, self.sample_rate, subtype="PCM_16")
                    sf.write(f"{tmp}/sample{i}_reconstruction_q{q}.wav", recon, self.sample_rate, subtype="PCM_16")
                    spectrogram_png(orig, recon, self.sample_rate, f"{tmp}/sample{i}_spectrogram.png",
                                    title=f"step {step}, {q} quantizers")
                tracker.log_artifacts(tmp, f"samples/step_{step:07d}")
        logger.info("step %d validation: %s", step, {k: round(v, 4) for k, v in metrics.items()})
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
