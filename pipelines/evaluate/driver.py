"""Driver of the evaluation job: plan, evaluate shards on a Ray actor pool, report, log to MLflow.

Plan (no Ray): pin the model (:func:`pipelines.common.models.resolve_model`), read its geometry, list the
shards, find the optional tools (ViSQOL, an Opus encoder). Run: one :class:`ShardEvaluator` call per
shard. Report: ``eval.json``, ``eval_table.txt`` and ``rate_distortion.png`` in ``output``, the table
printed, and an MLflow run (experiment ``evaluation``) with the metrics, those files and audio examples,
linked to the model version (run input + metrics on the logged model + a tag on the registry version).
"""

from __future__ import annotations

import base64
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.common import shard_io as tio
from pipelines.common.config import ConfigError, check_n_q
from pipelines.common.models import ModelRef, model_geometry, resolve_model
from pipelines.common.storage import StorageConfig
from pipelines.common.tracking import loggable_params, resolve_tracking_uri
from pipelines.evaluate.config import EvaluateConfig
from pipelines.evaluate.report import (
    aggregate_settings,
    flat_metrics,
    format_table,
    layer_report,
    rate_distortion_plot,
)
from pipelines.evaluate.stage import codec_setting, opus_setting
from pipelines.evaluate.tools import Visqol, baseline_bitrates, find_opus_encoder

EVAL_JSON = "eval.json"
TABLE_TXT = "eval_table.txt"
PLOT_PNG = "rate_distortion.png"


@dataclass
class EvaluatePlan:
    """Everything decided before Ray starts."""

    model: ModelRef
    geometry: dict[str, Any]  # sample_rate, frame_rate, n_codebooks, codebook_size
    shards: list[str]
    visqol: bool
    opus_backend: str | None
    opus_kbps: list[float]
    notes: list[str]
    mlflow_uri: str
    storage: StorageConfig = field(repr=False, default_factory=StorageConfig)


@dataclass
class EvaluateResult:
    """Outcome of a run: the report (the content of ``eval.json``), failed shards, the MLflow run id."""

    report: dict[str, Any]
    failed: dict[str, str]
    run_id: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failed and self.report["tracks"] > 0


def plan_evaluate(cfg: EvaluateConfig) -> EvaluatePlan:
    """Resolve the model, list the shards and find the optional tools (no Ray needed).

    Raises:
        ConfigError: ``metrics.n_q`` beyond the model's codebooks, or ``metrics.visqol=on`` without
            ViSQOL installed.
        FileNotFoundError: no shards.
    """
    from codec.metrics import bitrate  # noqa: F401  (fail early if the metric code is broken)

    mlflow_uri = resolve_tracking_uri(cfg.tracking.uri)
    model = resolve_model(cfg.model, mlflow_uri)
    geometry = model_geometry(model, mlflow_uri)
    check_n_q("metrics.n_q", cfg.metrics.n_q, geometry["n_codebooks"])
    storage = cfg.storage.resolved()
    shards = tio.list_shards(cfg.shards, storage)
    notes: list[str] = []
    visqol = False
    if cfg.metrics.visqol != "off":
        visqol, detail = Visqol.availability()
        if not visqol and cfg.metrics.visqol == "on":
            raise ConfigError(f"metrics.visqol: on, but {detail}")
        notes.append(detail)
    else:
        notes.append("ViSQOL not computed: metrics.visqol=off")
    backend, kbps = None, []
    if cfg.baseline.enabled:
        encoder, detail = find_opus_encoder(cfg.baseline.encoder)
        notes.append(detail)
        if encoder is not None:
            backend, kbps = encoder.backend, baseline_bitrates(encoder, cfg.baseline.kbps, cfg.baseline.include_lowest)
    else:
        notes.append("Opus baseline skipped: baseline.enabled=false")
    return EvaluatePlan(model=model, geometry=geometry, shards=shards, visqol=visqol, opus_backend=backend,
                        opus_kbps=kbps, notes=notes, mlflow_uri=mlflow_uri, storage=storage)


def settings_of(cfg: EvaluateConfig, plan: EvaluatePlan) -> list[dict[str, Any]]:
    """The evaluated settings in report order: codec by n_q, then Opus by bitrate (nominal kbps)."""
    from codec.metrics import bitrate

    g = plan.geometry
    out = [{"name": codec_setting(q), "system": "codec", "n_q": q,
            "kbps": bitrate(q, g["frame_rate"], g["codebook_size"]) / 1000} for q in sorted(cfg.metrics.n_q)]
    out += [{"name": opus_setting(k), "system": "opus", "backend": plan.opus_backend, "kbps": k}
            for k in plan.opus_kbps]
    return out


def _evaluate_dataset(cfg: EvaluateConfig, plan: EvaluatePlan) -> Any:
    import ray

    from pipelines.evaluate.stage import ShardEvaluator

    if not ray.is_initialized():  # RAY_ADDRESS under `ray job submit`, else an embedded local Ray
        ray.init(address=cfg.ray_address, log_to_driver=False)
    c = cfg.compute
    ray.data.DataContext.get_current().enable_progress_bars = False
    items = [{"shard": s, "examples": cfg.tracking.audio_examples if i == 0 else 0}
             for i, s in enumerate(plan.shards)]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    return ds.map_batches(
        ShardEvaluator, batch_size=1, **c.actor_pool(len(items)),
        fn_constructor_kwargs={
            "model": plan.model.to_json(), "n_q": list(cfg.metrics.n_q), "opus_backend": plan.opus_backend,
            "opus_kbps": plan.opus_kbps, "visqol": plan.visqol, "max_seconds": cfg.metrics.max_seconds,
            "min_seconds": cfg.metrics.min_seconds, "max_tracks": cfg.max_tracks,
            "example_seconds": cfg.tracking.example_seconds, "device": c.device,
            "torch_threads": c.threads, "mlflow_uri": plan.mlflow_uri,
            "storage": plan.storage,
        },
    )


def build_report(cfg: EvaluateConfig, plan: EvaluatePlan, tracks: list[dict[str, Any]],
                 skipped: list[dict[str, str]], counts: Any, failed: dict[str, str]) -> dict[str, Any]:
    """The content of ``eval.json``."""
    g = plan.geometry
    tracks = sorted(tracks, key=lambda t: (t["shard"], t["key"]))
    return {
        "model": plan.model.to_json(),
        "shards": plan.shards,
        **g,
        "n_q": sorted(cfg.metrics.n_q),
        "max_seconds": cfg.metrics.max_seconds,
        "tracks": len(tracks),
        "seconds": float(sum(t["seconds"] for t in tracks)),
        "settings": aggregate_settings(tracks, settings_of(cfg, plan)),
        "codebook": layer_report(counts, g["codebook_size"], g["n_codebooks"]),
        "visqol": plan.visqol,
        "baseline": plan.opus_backend,
        "notes": list(plan.notes),
        "skipped": sorted(skipped, key=lambda s: (s["shard"], s["key"])),
        "failed_shards": failed,
        "per_track": tracks,
    }


def run_evaluate(cfg: EvaluateConfig, log: Callable[[str], None] = print) -> EvaluateResult:
    """Evaluate every track of the shards, write the report and log the MLflow run.

    Args:
        cfg: checked config.
        log: where status lines and the final table go.
    """
    plan = plan_evaluate(cfg)
    for note in plan.notes:
        log(note)
    log(f"Evaluating {plan.model.uri} ({plan.model.load_uri}) on {len(plan.shards)} shard(s) from {cfg.shards} "
        f"at n_q {sorted(cfg.metrics.n_q)}" + (f" and Opus {plan.opus_kbps} kbps" if plan.opus_kbps else ""))
    t0 = time.perf_counter()
    tracks: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    failed: dict[str, str] = {}
    examples: dict[str, dict[str, str]] = {}
    counts = None
    from tqdm import tqdm

    with tqdm(total=len(plan.shards), unit="shard", disable=not cfg.progress) as bar:
        for row in _evaluate_dataset(cfg, plan).iter_rows():
            result = json.loads(row["result"])
            tracks += result["tracks"]
            skipped += result["skipped"]
            if not row["ok"]:
                failed[str(row["shard"])] = str(row["error"])
                log(f"FAILED shard {row['shard']}: {row['error']}")
            if result.get("counts") is not None:
                import numpy as np

                c = np.asarray(result["counts"], dtype=np.int64)
                counts = c if counts is None else counts + c
            examples.update(result.get("examples") or {})
            bar.update(1)
    for s in skipped:
        log(f"skipped track {s['shard']}/{s['key']}: {s['reason']}")
    report = build_report(cfg, plan, tracks, skipped, None if counts is None else counts.tolist(), failed)
    report["elapsed_s"] = time.perf_counter() - t0
    table = format_table(report)
    with tempfile.TemporaryDirectory() as tmp:
        files = write_outputs(report, table, Path(tmp))
        for f in files:
            tio.write_atomic(tio.join(cfg.output, f.name), f.read_bytes(), plan.storage)
        run_id = log_mlflow(cfg, plan, report, files, examples, Path(tmp)) if cfg.tracking.enabled else None
    log(table)
    log(f"wrote {tio.join(cfg.output, EVAL_JSON)}" + (f"; MLflow run {run_id}" if run_id else ""))
    return EvaluateResult(report, failed, run_id)


def write_outputs(report: dict[str, Any], table: str, folder: Path) -> list[Path]:
    """Write eval.json, the table and (with matplotlib) the rate–distortion plot into ``folder``."""
    files = [folder / EVAL_JSON, folder / TABLE_TXT]
    files[0].write_text(json.dumps(report, indent=1, allow_nan=True) + "\n")
    files[1].write_text(table + "\n")
    plot = rate_distortion_plot(report, folder / PLOT_PNG)
    if plot is None:
        report["notes"].append("rate–distortion plot skipped: matplotlib is not installed")
    else:
        files.append(plot)
    return files


def log_mlflow(cfg: EvaluateConfig, plan: EvaluatePlan, report: dict[str, Any], files: list[Path],
               examples: dict[str, dict[str, str]], tmp: Path) -> str:
    """Log the evaluation run; link it to the model (logged-model input, metrics, registry version tag)."""
    from mlflow.entities import LoggedModelInput, Metric

    from pipelines.common.config import to_dict
    from pipelines.common.tracking import RunLogger, default_artifact_location, get_or_create_run, log_params

    m = plan.model
    name = cfg.tracking.run_name or f"eval-{m.name or m.uri.rstrip('/').rsplit('/', 1)[-1]}-{m.version or ''}"
    tags = {"model.uri": m.uri, "model.load_uri": m.load_uri, "model.kind": m.kind, "shards": cfg.shards,
            "visqol": str(plan.visqol), "baseline": plan.opus_backend or "none"}
    tags.update({k: v for k, v in (("model.name", m.name), ("model.version", m.version),
                                   ("model.run_id", m.run_id), ("model.model_id", m.model_id)) if v})
    run_id = get_or_create_run(plan.mlflow_uri, cfg.tracking.experiment, name,
                               artifact_location=cfg.tracking.artifact_location
                               or default_artifact_location(plan.mlflow_uri), tags=tags)
    tracker = RunLogger(plan.mlflow_uri, run_id)
    tracker.start()
    try:
        c = tracker.client
        log_params(plan.mlflow_uri, run_id, loggable_params(to_dict(cfg)))
        tracker.set_tags(tags)
        metrics = flat_metrics(report)
        ts = int(time.time() * 1000)
        batch = [Metric(k, float(v), ts, 0) for k, v in metrics.items()]
        if m.model_id:
            batch += [Metric(k, float(v), ts, 0, model_id=m.model_id) for k, v in metrics.items()]
            c.log_inputs(run_id, models=[LoggedModelInput(m.model_id)])
        for i in range(0, len(batch), 1000):
            c.log_batch(run_id, metrics=batch[i:i + 1000])
        for f in files:
            tracker.log_artifact(f)
        folder = tmp / "examples"
        for key, audio in sorted(examples.items()):
            sub = folder / key.replace("/", "_")
            sub.mkdir(parents=True, exist_ok=True)
            for setting, blob in audio.items():
                (sub / f"{setting}.flac").write_bytes(base64.b64decode(blob))
        if examples:
            tracker.log_artifacts(folder, "examples")
        if m.kind == "registry":
            c.set_model_version_tag(m.name, m.version, "evaluation_run_id", run_id)
            best = codec_setting(max(cfg.metrics.n_q))
            c.set_model_version_tag(m.name, m.version, f"evaluation_{best}_mel_distance",
                                    str(metrics.get(f"{best}/mel_distance", "")))
        tracker.end("FINISHED")
    except BaseException:
        tracker.end("FAILED")
        raise
    return run_id

