"""MLflow tracking shared by the train, tokenize and evaluate jobs.

One run per job name: :func:`get_or_create_run` looks a run up by name (so a resubmitted or restarted job
continues the same run) and the run id is handed to whichever process logs (the driver, or rank 0 of a
Ray Train worker group) through :class:`RunLogger`. Everything goes through ``MlflowClient`` with an
explicit run id: no global active run, so several loggers can live in one process.

Secrets never reach MLflow: :func:`loggable_params` flattens a config and redacts every value whose key
contains ``secret``, ``token``, ``password``, ``key`` or ``credential``.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from codec.checkpoint import DEFAULT_TRACKING_URI
from pipelines.common.config import ConfigError, to_dict

REDACTED = "***"
SECRET_MARKERS = ("secret", "token", "password", "key", "credential")
LOGGED_MODEL_TAG = "logged_model_id"  # model version tag: the MLflow 3 logged model behind the version
RESERVED_ALIASES = ("latest",)  # MLflow resolves models:/NAME@latest itself and refuses to set it
MAX_PARAM_CHARS = 6000


def is_secret_key(key: str) -> bool:
    """True when any part of a (dotted) config key names a secret."""
    lowered = key.lower()
    return any(marker in lowered for marker in SECRET_MARKERS)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into ``{"a.b.c": value}`` (lists stay values).

    Args:
        node: a mapping (dict or omegaconf DictConfig) or a leaf.
        prefix: key prefix for the leaves.
    """
    if isinstance(node, Mapping) or (hasattr(node, "items") and hasattr(node, "keys")):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def loggable_params(config: Any) -> dict[str, str]:
    """A config as flat MLflow params: dotted keys, JSON-ish string values, secrets redacted.

    Args:
        config: nested mapping (plain containers or an omegaconf DictConfig, resolved).
    """
    if hasattr(config, "_metadata"):  # omegaconf node -> plain containers
        config = to_dict(config)
    params = {}
    for key, value in flatten(config).items():
        if is_secret_key(key) and value not in (None, ""):
            text = REDACTED
        elif isinstance(value, str):
            text = value
        else:
            text = json.dumps(value)
        params[key] = text[:MAX_PARAM_CHARS]
    return params


def resolve_tracking_uri(uri: str | None = None, base_dir: str | Path | None = None) -> str:
    """The tracking URI to use: ``uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``.

    A relative sqlite path is made absolute against ``base_dir`` (default: the working directory) so Ray
    workers, whose working directory differs, write to the same database.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        path = Path(base_dir or os.getcwd()) / uri[len(prefix):]
        uri = prefix + str(path.resolve())
    elif "://" not in uri and not uri.startswith(("databricks", "file:")):
        raise ConfigError(f"tracking.uri: unsupported tracking URI {uri!r} (use sqlite:///..., "
                         "http(s)://... or databricks)")
    return uri


def default_artifact_location(tracking_uri: str) -> str | None:
    """Artifacts beside a sqlite database (``<db dir>/mlartifacts``); a server decides its own (None)."""
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix):
        return str(Path(tracking_uri[len(prefix):]).parent / "mlartifacts")
    return None


def client(tracking_uri: str, registry_uri: str | None = None):
    """An ``MlflowClient`` bound to explicit URIs (mlflow is imported lazily)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)


def get_or_create_experiment(c, name: str, artifact_location: str | None = None) -> str:
    """The id of experiment ``name``, created (with ``artifact_location``) when missing."""
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return c.create_experiment(name, artifact_location=artifact_location)
    except Exception:  # created concurrently
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def find_run(c, experiment_id: str, run_name: str):
    """The most recent run called ``run_name`` in the experiment, or None."""
    escaped = run_name.replace("'", "\\'")
    runs = c.search_runs([experiment_id], filter_string=f"attributes.run_name = '{escaped}'",
                         order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def get_or_create_run(tracking_uri: str, experiment: str, run_name: str, *,
                      artifact_location: str | None = None, tags: Mapping[str, str] | None = None) -> str:
    """The id of the run named ``run_name`` (created if absent); a resumed job continues its run.

    Args:
        tracking_uri: MLflow tracking URI.
        experiment: experiment name (created if missing).
        run_name: the job's run name (same as the Ray Train run name).
        artifact_location: artifact root for a newly created experiment (default: beside a sqlite store,
            never the working directory's ``./mlruns``).
        tags: tags set on a newly created run.
    """
    c = client(tracking_uri)
    exp_id = get_or_create_experiment(c, experiment, artifact_location or default_artifact_location(tracking_uri))
    run = find_run(c, exp_id, run_name)
    if run is not None:
        return run.info.run_id
    return c.create_run(exp_id, run_name=run_name, tags=dict(tags or {})).info.run_id


def log_params(tracking_uri: str, run_id: str, params: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Log params that the run does not have yet; MLflow params are immutable.

    A resumed run whose config changed (e.g. a larger ``max_steps``) keeps the first value as the param
    and records the new one as a tag ``param_changed.<key>``.

    Returns:
        The changed params: ``{key: (old, new)}``.
    """
    from mlflow.entities import Param, RunTag

    c = client(tracking_uri)
    existing = c.get_run(run_id).data.params
    new = [Param(k, v) for k, v in params.items() if k not in existing]
    changed = {k: (existing[k], v) for k, v in params.items() if k in existing and existing[k] != v}
    tags = [RunTag(f"param_changed.{k}", v[:MAX_PARAM_CHARS]) for k, (_, v) in changed.items()]
    for i in range(0, len(new), 100):  # log_batch takes at most 100 params per call
        c.log_batch(run_id, params=new[i:i + 100])
    if tags:
        c.log_batch(run_id, tags=tags)
    return changed


def system_info() -> dict[str, Any]:
    """Host, Python, library versions, CPUs, memory and GPUs of this process."""
    import psutil
    import torch

    info: dict[str, Any] = {
        "host": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "cpu_count": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 2),
        "cuda_available": torch.cuda.is_available(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }
    for module in ("ray", "mlflow", "torchaudio"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            pass
    return info


class RunLogger:
    """Logs metrics and artifacts into an existing run (rank 0 of a job only).

    Metrics carry an explicit ``step``. After a restart, :meth:`resume_from_history` makes the logger skip
    steps that are already in the run, so the step sequence never goes back or repeats.

    Args:
        tracking_uri: MLflow tracking URI.
        run_id: the run to log into (from :func:`get_or_create_run`).
        registry_uri: model registry URI (default: the tracking URI).
    """

    def __init__(self, tracking_uri: str, run_id: str, registry_uri: str | None = None):
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self.run_id = run_id
        self.client = client(tracking_uri, self.registry_uri)
        self.skip_through = -1

    def start(self) -> None:
        """Mark the run as running (also when it is resumed after finishing or failing)."""
        self.client.update_run(self.run_id, status="RUNNING")

    def end(self, status: str = "FINISHED") -> None:
        """Terminate the run with ``status`` (FINISHED, FAILED or KILLED)."""
        self.client.set_terminated(self.run_id, status=status)

    def resume_from_history(self, keys: Iterable[str]) -> int:
        """Skip every metric at or before the last step already logged for any of ``keys``.

        A restarted worker replays the steps after its checkpoint; those were logged by the failed
        attempt, so they are not logged again and each metric's step sequence stays strictly increasing.

        Returns:
            The largest step already logged for any of ``keys`` (-1 when none).
        """
        for key in keys:
            history = self.client.get_metric_history(self.run_id, key)
            if history:
                self.skip_through = max(self.skip_through, max(m.step for m in history))
        return self.skip_through

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log float metrics at ``step`` in one batch (nothing when ``step`` was logged before a restart)."""
        from mlflow.entities import Metric

        if step <= self.skip_through:
            return
        ts = int(time.time() * 1000)
        batch = [Metric(k, float(v), ts, int(step)) for k, v in metrics.items()]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[i:i + 1000])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set string tags on the run."""
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def delete_tag(self, key: str) -> None:
        """Remove a tag from the run (nothing when it is not set)."""
        if key in self.client.get_run(self.run_id).data.tags:
            self.client.delete_tag(self.run_id, key)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload one local file under ``artifact_path``."""
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> None:
        """Upload a local folder under ``artifact_path``."""
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        """Write ``obj`` as JSON to ``artifact_file`` in the run."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            path.write_text(json.dumps(obj, indent=2, default=str))
            parent = str(Path(artifact_file).parent)
            self.log_artifact(path, None if parent == "." else parent)

    def log_model_dir(self, local_dir: str | Path, *, name: str = "model",
                      registered_name: str | None = None, alias: str | None = None,
                      tags: Mapping[str, str] | None = None) -> str | None:
        """Log a folder (e.g. ``Codec.save_pretrained`` output) as an MLflow 3 logged model; register it.

        The files are stored exactly as given (safetensors + YAML, no pickle, no flavor), so
        ``mlflow.artifacts.download_artifacts("models:/NAME@ALIAS")`` returns the same folder.

        Args:
            local_dir: folder to log.
            name: logged model name within the run.
            registered_name: register a new version under this name (None: don't register).
            alias: alias to point at the new version; ``latest`` is implicit in MLflow and not set.
            tags: tags of the model version.

        Returns:
            ``models:/NAME/VERSION`` of the registered version, or ``models:/<model_id>``.
        """
        from mlflow.entities import LoggedModelStatus

        run = self.client.get_run(self.run_id)
        model = self.client.create_logged_model(experiment_id=run.info.experiment_id, name=name,
                                                source_run_id=self.run_id)
        try:
            self.client.log_model_artifacts(model.model_id, str(local_dir))
        except Exception:
            self.client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
            raise
        self.client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        if not registered_name:
            return f"models:/{model.model_id}"
        try:
            self.client.create_registered_model(registered_name)
        except Exception as e:  # already exists
            if "already exists" not in str(e).lower() and "RESOURCE_ALREADY_EXISTS" not in str(e):
                raise
        # The artifact location, not models:/<model_id>: MLflow resolves the latter in its global store (and then
        # keeps no model id), so the logged model is named in a tag (LOGGED_MODEL_TAG) for lineage.
        version = self.client.create_model_version(registered_name, source=model.artifact_location,
                                                   run_id=self.run_id,
                                                   tags={**dict(tags or {}), LOGGED_MODEL_TAG: model.model_id},
                                                   model_id=model.model_id)
        if alias and alias.lower() not in RESERVED_ALIASES:
            self.client.set_registered_model_alias(registered_name, alias, version.version)
        self.set_tags({"registered_model": f"models:/{registered_name}/{version.version}"})
        return f"models:/{registered_name}/{version.version}"
