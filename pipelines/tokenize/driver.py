"""Driver of the tokenization job: plan (which shards are left), run the actor pool, summarise.

Exactly-once per shard: the plan is "input shards without a done marker" (all of them with
``overwrite``); each shard is redone from scratch by :class:`pipelines.tokenize.stage.ShardTokenizer`, whose
outputs are deterministic, so a resumed run ends byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipelines.common import shard_io as tio
from pipelines.common.config import check_n_q
from pipelines.common.models import ModelRef, model_geometry, resolve_model
from pipelines.common.storage import StorageConfig
from pipelines.common.tracking import RunLogger, loggable_params, resolve_tracking_uri
from pipelines.tokenize.config import TokenizeConfig, config_hash
from pipelines.tokenize.stats import build_manifest, build_stats
from pipelines.tokenize.writers import make_writer


@dataclass
class TokenizePlan:
    """What a run will do. ``todo``: input shard URLs to (re)tokenize; ``names``: all output names."""

    model: ModelRef
    config_hash: str
    shards: list[str]
    names: list[str]
    todo: list[str]
    done: list[str]
    mlflow_uri: str
    storage: StorageConfig = field(repr=False, default_factory=StorageConfig)


@dataclass
class TokenizeResult:
    """Outcome of a run (``stats`` covers the whole output, not only this run's shards)."""

    shards_run: int
    failed: dict[str, str]
    tracks: int
    seconds: float
    elapsed: float
    stats: dict[str, Any]
    run_id: str | None = None
    nothing_to_do: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed


class OutputMismatchError(RuntimeError):
    """The output already holds shards made with another model/config (use overwrite=true)."""


def plan_tokenize(cfg: TokenizeConfig) -> TokenizePlan:
    """Resolve the model, list input shards and done markers, and decide what to run (no Ray needed).

    Raises:
        OutputMismatchError: done shards in the output were made with a different config hash.
        FileNotFoundError: no input shards.
        ConfigError: ``n_q`` beyond the model's codebooks.
    """
    mlflow_uri = resolve_tracking_uri(cfg.tracking.uri)
    model = resolve_model(cfg.model, mlflow_uri)
    if cfg.n_q is not None:  # else every track fails to encode and its shard is marked done, empty
        check_n_q("n_q", [cfg.n_q], model_geometry(model, mlflow_uri)["n_codebooks"])
    chash = config_hash(model.load_uri if model.kind != "dir" else model.version, cfg.n_q or 0, cfg.output_format)
    storage = cfg.storage.resolved()
    shards = tio.list_shards(cfg.input, storage)
    writer = make_writer(cfg.output_format)
    names = [writer.file_name(n) for n in tio.check_output_names(shards)]
    found = {} if cfg.overwrite else tio.read_done(cfg.output, storage)
    by_path = {tio.done_url(cfg.output, name): m for name, m in found.items()}  # another format: same marker path
    markers = {n: by_path[tio.done_url(cfg.output, n)] for n in names if tio.done_url(cfg.output, n) in by_path}
    stale = sorted(n for n in names if n in markers and markers[n]["config_hash"] != chash)  # (a format change too)
    if stale:
        raise OutputMismatchError(
            f"{cfg.output} has {len(stale)} shard(s) (e.g. {stale[0]}) tokenized with config hash "
            f"{markers[stale[0]]['config_hash']} != {chash} (model {model.load_uri}, n_q {cfg.n_q}); "
            "use another output or overwrite=true")
    todo = [s for s, n in zip(shards, names, strict=True) if n not in markers]
    done = [n for n in names if n in markers]
    return TokenizePlan(model=model, config_hash=chash, shards=shards, names=names, todo=todo, done=done,
                        mlflow_uri=mlflow_uri, storage=storage)


def write_summary(cfg: TokenizeConfig, plan: TokenizePlan) -> dict[str, Any]:
    """(Re)write manifest.json and stats.json from the done markers of the input's shards."""
    markers = tio.read_done(cfg.output, plan.storage)
    done = [markers[n] for n in sorted(plan.names) if n in markers and markers[n]["config_hash"] == plan.config_hash]
    pending = sorted(set(plan.names) - {m["shard"] for m in done})
    stats = build_stats(done, pending)
    manifest = build_manifest(done, pending, plan.model.to_json(), plan.config_hash,
                              writer=make_writer(cfg.output_format))
    tio.write_atomic(tio.join(cfg.output, "stats.json"), tio.json_bytes(stats), plan.storage)
    tio.write_atomic(tio.join(cfg.output, "manifest.json"), tio.json_bytes(manifest), plan.storage)
    return stats


def _progress(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="shard", disable=not enabled, dynamic_ncols=True, mininterval=0.5)


def run_tokenize(cfg: TokenizeConfig, log: Callable[[str], None] = print) -> TokenizeResult:
    """Tokenize every input shard that is not done yet (Ray is started only when there is work).

    Args:
        cfg: checked config.
        log: where status lines go.

    Returns:
        The run's outcome; ``nothing_to_do`` when every shard was already done.
    """
    plan = plan_tokenize(cfg)
    summary = [tio.join(cfg.output, f) for f in ("manifest.json", "stats.json")]
    if not plan.todo and all(tio.exists(u, plan.storage) for u in summary):
        stats = json.loads(tio.read_bytes(summary[1], plan.storage))
        log(f"Nothing to do: all {len(plan.names)} shard(s) in {cfg.output} are already tokenized with "
            f"{plan.model.load_uri} (config {plan.config_hash}); pass overwrite=true to redo them.")
        result = TokenizeResult(0, {}, 0, 0.0, 0.0, stats, nothing_to_do=True)
        _finish_interrupted_run(cfg, plan, result)
        return result
    if cfg.overwrite:
        for n in plan.names:
            tio.remove(tio.done_url(cfg.output, n), plan.storage)
    log(f"Tokenizing {len(plan.todo)} of {len(plan.names)} shard(s) ({len(plan.done)} already done) from "
        f"{cfg.input} with {plan.model.uri} -> {plan.model.load_uri} into {cfg.output}")
    tracker = _start_mlflow(cfg, plan)
    t0 = time.perf_counter()
    tracks = frames = 0
    seconds = 0.0
    failed: dict[str, str] = {}
    try:
        if plan.todo:
            bar = _progress(len(plan.todo), cfg.progress)
            for row in _tokenize_dataset(cfg, plan).iter_rows():
                if not row["ok"]:
                    failed[str(row["shard"])] = str(row["error"])
                    log(f"FAILED shard {row['shard']}: {row['error']}")
                tracks += int(row["tracks"])
                frames += int(row["frames"])
                seconds += float(row["seconds"])
                el = max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix_str(f"{tracks} tracks {tracks / el:.2f}/s, {seconds / 3600:.3f} h audio "
                                    f"{seconds / 3600 / el:.5f} h/s", refresh=False)
                bar.update(1)
            bar.close()
        elapsed = time.perf_counter() - t0
        stats = write_summary(cfg, plan)
        result = TokenizeResult(len(plan.todo), failed, tracks, seconds, elapsed, stats)
        if tracker is not None:
            result.run_id = tracker.run_id
            _finish_mlflow(plan, result, tracker)
    except BaseException:
        if tracker is not None:
            tracker.end("FAILED")
        raise
    log(summary_line(cfg, result))
    return result


def summary_line(cfg: TokenizeConfig, r: TokenizeResult) -> str:
    """One-line summary of a run."""
    el = max(r.elapsed, 1e-9)
    s = r.stats
    line = (f"Done: {r.shards_run - len(r.failed)}/{r.shards_run} shard(s) this run, {r.tracks} tracks, "
            f"{r.seconds / 3600:.4f} h audio in {r.elapsed:.1f} s ({r.tracks / el:.2f} tracks/s, "
            f"{r.seconds / el:.1f} audio-s/s); output {cfg.output}: {s['shards']} shard(s), {s['tracks']} tracks, "
            f"{s['hours']:.4f} h, {s['tokens']} tokens, {len(s['skipped'])} skipped track(s)")
    if r.failed:
        line += f"; {len(r.failed)} shard(s) FAILED (rerun to retry): {', '.join(sorted(r.failed))}"
    return line


def _tokenize_dataset(cfg: TokenizeConfig, plan: TokenizePlan) -> Any:
    import ray

    from pipelines.tokenize.stage import ShardTokenizer

    if not ray.is_initialized():  # RAY_ADDRESS under `ray job submit`, else an embedded local Ray
        ray.init(address=cfg.ray_address, log_to_driver=False)
    c = cfg.compute
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.from_items([{"shard": s} for s in plan.todo], override_num_blocks=len(plan.todo))
    return ds.map_batches(
        ShardTokenizer,
        batch_size=1,
        **c.actor_pool(len(plan.todo)),
        fn_constructor_kwargs={
            "model": plan.model.to_json(),
            "output": cfg.output,
            "config_hash": plan.config_hash,
            "n_q": cfg.n_q,
            "batch_size": c.batch_size,
            "batch_seconds": c.batch_seconds,
            "device": c.device,
            "torch_threads": c.threads,
            "mlflow_uri": plan.mlflow_uri,
            "storage": plan.storage,
            "output_format": cfg.output_format,
            "decode_ahead": c.encode_leaves_a_cpu_free,  # else a decode thread stalls the torch threads
        },
    )


def _start_mlflow(cfg: TokenizeConfig, plan: TokenizePlan) -> RunLogger | None:
    """The job's run in the ``tracking:`` store (bound explicitly: no global MLflow state).

    One run per output (run name ``tokenize-<output folder>`` unless ``tracking.run_name``): a rerun after a
    kill continues that run, as training does, instead of leaving it RUNNING and opening another.
    """
    if not cfg.tracking.enabled:
        return None
    from pipelines.common.config import to_dict
    from pipelines.common.tracking import RunLogger, default_artifact_location, get_or_create_run, log_params

    run_id = get_or_create_run(plan.mlflow_uri, cfg.tracking.experiment, _run_name(cfg),
                               artifact_location=cfg.tracking.artifact_location
                               or default_artifact_location(plan.mlflow_uri))
    tracker = RunLogger(plan.mlflow_uri, run_id)
    tracker.start()  # a rerun continues the run its killed predecessor left RUNNING
    log_params(plan.mlflow_uri, tracker.run_id, loggable_params(to_dict(cfg)))
    m = plan.model
    tags = {"model.uri": m.uri, "model.load_uri": m.load_uri, "model.kind": m.kind, "config_hash": plan.config_hash,
            "input": cfg.input, "output": cfg.output}
    if m.name:
        tags.update({"model.name": m.name, "model.version": m.version or ""})
    if m.run_id:
        tags["model.run_id"] = m.run_id
    tracker.set_tags(tags)
    _log_lineage(cfg, plan, tracker)
    return tracker


def _finish_interrupted_run(cfg: TokenizeConfig, plan: TokenizePlan, result: TokenizeResult) -> None:
    """Finish (with the output's stats) a run left RUNNING by a job killed after its last shard was done."""
    if not cfg.tracking.enabled:
        return
    from pipelines.common.tracking import client, find_run

    c = client(plan.mlflow_uri)
    exp = c.get_experiment_by_name(cfg.tracking.experiment)
    run = find_run(c, exp.experiment_id, _run_name(cfg)) if exp is not None else None
    if run is not None and run.info.status == "RUNNING":
        result.run_id = run.info.run_id
        _finish_mlflow(plan, result, RunLogger(plan.mlflow_uri, run.info.run_id))


def _run_name(cfg: TokenizeConfig) -> str:
    return cfg.tracking.run_name or f"tokenize-{cfg.output.rstrip('/').rsplit('/', 1)[-1]}"


def _log_lineage(cfg: TokenizeConfig, plan: TokenizePlan, tracker: RunLogger) -> None:
    """Input/output datasets and (MLflow 3) the logged model behind the registry version."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag, LoggedModelInput
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    datasets = []
    for ctx, uri in (("input", cfg.input), ("output", cfg.output)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "can be interpreted in multiple ways" for local paths
                src = resolve_dataset_source(uri)
        except Exception:  # noqa: BLE001  (no registered source for this scheme: skip the link)
            continue
        dataset = MetaDataset(src, name=uri.rstrip("/").rsplit("/", 1)[-1], digest=plan.config_hash)
        datasets.append(DatasetInput(dataset._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, ctx)]))
    models = [LoggedModelInput(plan.model.model_id)] if plan.model.model_id else None
    tracker.client.log_inputs(tracker.run_id, datasets=datasets or None, models=models)


def _finish_mlflow(plan: TokenizePlan, r: TokenizeResult, tracker: RunLogger) -> None:
    s = r.stats
    metrics = {"tracks": s["tracks"], "hours": s["hours"], "tokens": s["tokens"], "shards": s["shards"],
               "skipped_tracks": len(s["skipped"]), "failed_shards": len(r.failed), "run_tracks": r.tracks,
               "run_audio_seconds": r.seconds, "elapsed_s": r.elapsed,
               "audio_seconds_per_s": r.seconds / max(r.elapsed, 1e-9)}
    for i, layer in enumerate(s["codebook"]):
        metrics[f"codebook_usage_l{i}"] = layer["usage"]
        metrics[f"codebook_perplexity_l{i}"] = layer["perplexity"]
    tracker.log_metrics(metrics, step=0)
    tracker.log_dict(s, "stats.json")
    tracker.end("FAILED" if r.failed else "FINISHED")
