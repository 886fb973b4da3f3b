"""The one config loader of the pipelines and the sections every job shares.

Config flows one way: YAML -> :func:`load_config` (schema defaults <- YAML <- ``key=value`` overrides, typed by
omegaconf) -> a dataclass (or, for the training job, a read-only typed ``DictConfig``) -> the job's builders.
Every problem is a :class:`ConfigError` (the codec's own class: one error for codec and pipelines configs)
whose message starts with the offending key. Keys that were renamed fail with a message naming the new key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from codec.allocator import malloc_env
from codec.config import ConfigError

T = TypeVar("T")
Source = str | Path | Mapping[str, Any] | DictConfig | None

__all__ = ["MISSING", "RENAMED_TRACKING", "ComputeConfig", "ConfigError", "TrackingConfig", "check_compute", "check_missing", "check_n_q",
           "check_tracking", "fail", "load_config", "merge", "read_layers", "to_dict", "to_yaml"]


@dataclass
class ComputeConfig:
    """A Ray Data actor pool holding one model per actor.

    Attributes:
        actors: actor-pool size.
        num_cpus: CPUs reserved per actor.
        num_gpus: GPUs per actor (0 on CPU).
        torch_threads: intra-op threads per actor; None uses ``num_cpus``.
        device: "auto" (cuda when the actor has a GPU), "cpu" or "cuda".
        niceness: Unix niceness of the actors' processes, 0 (normal) to 19 (lowest). Ray starts its workers at
            15 so that they yield to its own processes; these actors are the job's work, so they run at 0 by
            default (at 15, every wake-up of the driver or of Ray's processes stalls the actor's torch threads).
        tune_malloc: start the actors with glibc malloc keeping freed memory for reuse
            (:mod:`codec.allocator`: one arena, 1 GiB mmap and trim thresholds), so that an encode does not
            fault its activations in again on every window; false keeps glibc's defaults.
    """

    actors: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    torch_threads: int | None = None
    device: str = "auto"
    niceness: int = 0
    tune_malloc: bool = True

    @property
    def threads(self) -> int:
        """Intra-op torch threads per actor: ``torch_threads``, else ``num_cpus`` (at least 1)."""
        return self.torch_threads or max(1, int(self.num_cpus))

    @property
    def encode_leaves_a_cpu_free(self) -> bool:
        """Whether an actor's encode leaves one of its CPUs idle for other work (decoding ahead): it runs on a
        GPU, or on fewer torch threads than reserved CPUs."""
        return self.num_gpus > 0 or self.threads < self.num_cpus

    def actor_pool(self, rows: int) -> dict[str, Any]:
        """``Dataset.map_batches`` arguments that run this pool over ``rows`` rows (never more actors than rows)."""
        import ray

        return {"compute": ray.data.ActorPoolStrategy(size=min(self.actors, rows)), "num_cpus": self.num_cpus,
                "num_gpus": self.num_gpus,
                # read by each Ray worker as it starts; merged into the job's own runtime_env
                "runtime_env": {"env_vars": {"RAY_worker_niceness": str(self.niceness),
                                             **(malloc_env() if self.tune_malloc else {})}}}


@dataclass
class TrackingConfig:
    """The ``tracking:`` section of every job: where its MLflow run goes and where ``models:/`` and ``runs:/``
    model references are looked up (one store for both).

    Attributes:
        enabled: log an MLflow run.
        uri: tracking (and registry) store; None = ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``.
        registry_uri: model registry, when it is not the tracking store (where training registers its model).
        experiment: experiment name.
        run_name: run name; None = named by the job.
        artifact_location: None = beside a sqlite store, else the server's default.
    """

    enabled: bool = True
    uri: str | None = None
    registry_uri: str | None = None
    experiment: str = "muq-xcodec"
    run_name: str | None = None
    artifact_location: str | None = None


# Keys every job used to spell differently: old dotted key -> new dotted key.
RENAMED_TRACKING = {"mlflow": "tracking", "tracking.tracking_uri": "tracking.uri",
                    "mlflow.tracking_uri": "tracking.uri"}


def fail(key: str, message: str) -> None:
    """Raise the :class:`ConfigError` of ``key`` (``"<key>: <message>"``)."""
    raise ConfigError(f"{key}: {message}")


def check_compute(c: ComputeConfig, key: str = "compute") -> None:
    """Value checks of a :class:`ComputeConfig` section; raises :class:`ConfigError` naming the key."""
    if c.actors < 1:
        fail(f"{key}.actors", f"{c.actors} < 1")
    if c.num_cpus <= 0:
        fail(f"{key}.num_cpus", f"{c.num_cpus} <= 0")
    if c.num_gpus < 0:
        fail(f"{key}.num_gpus", f"{c.num_gpus} < 0")
    if c.torch_threads is not None and c.torch_threads < 1:
        fail(f"{key}.torch_threads", f"{c.torch_threads} < 1")
    if c.device not in ("auto", "cpu", "cuda"):
        fail(f"{key}.device", f"{c.device!r} not in auto/cpu/cuda")
    if not 0 <= c.niceness <= 19:
        fail(f"{key}.niceness", f"{c.niceness} not in 0..19")


def check_tracking(t: TrackingConfig, key: str = "tracking") -> None:
    """Value checks of a :class:`TrackingConfig` section; raises :class:`ConfigError` naming the key."""
    if not t.experiment.strip():
        fail(f"{key}.experiment", "empty")


def check_n_q(key: str, n_q: Sequence[int], n_codebooks: int | None = None) -> None:
    """The one check of RVQ layer counts: distinct, at least 1 and, once the model is known, at most its
    ``n_codebooks``. Raises :class:`ConfigError` naming ``key``."""
    if not n_q:
        fail(key, "empty")
    if any(q < 1 for q in n_q) or len(set(n_q)) != len(n_q):
        fail(key, f"{list(n_q)} must be distinct layer counts >= 1")
    too_big = [q for q in n_q if n_codebooks is not None and q > n_codebooks]
    if too_big:
        fail(key, f"{too_big} > the model's {n_codebooks} codebooks")


def _omegaconf_error(e: OmegaConfBaseException) -> ConfigError:
    key = getattr(e, "full_key", None) or "<config>"
    msg = (getattr(e, "msg", None) or str(e)).splitlines()[0]
    return ConfigError(f"{key}: {msg}")


def _check_renamed(layer: DictConfig, renamed: Mapping[str, str]) -> None:
    for old in sorted(renamed, key=len, reverse=True):
        node: Any = layer
        for part in old.split("."):
            node = node.get(part) if isinstance(node, DictConfig) and part in node else None
            if node is None:
                break
        else:
            fail(old, f"renamed: use {renamed[old]}")


def read_layers(source: Source, overrides: Sequence[str] | Mapping[str, Any] | None = None,
                renamed: Mapping[str, str] | None = None) -> tuple[DictConfig, DictConfig]:
    """The YAML (or mapping) and the overrides as two untyped layers, old key names refused.

    Raises:
        FileNotFoundError: ``source`` names a missing file.
        ConfigError: not a mapping, a malformed override or a renamed key.
    """
    if source is None:
        raw = OmegaConf.create({})
    elif isinstance(source, str | Path):
        if not Path(source).is_file():
            raise FileNotFoundError(f"no such config file: {source}")
        raw = OmegaConf.load(str(source))
    else:
        raw = source if isinstance(source, DictConfig) else OmegaConf.create(dict(source))
    if not isinstance(raw, DictConfig):
        fail("<config>", f"{source}: expected a mapping at the top level")
    try:
        dot = (OmegaConf.create(dict(overrides)) if isinstance(overrides, Mapping)
               else OmegaConf.from_dotlist(list(overrides or [])))
    except OmegaConfBaseException as e:
        fail("<overrides>", str(e).splitlines()[0])
    for layer in (raw, dot):
        _check_renamed(layer, renamed or {})
    return raw, dot


def merge(schema: type | None, *layers: Any, readonly: bool = False) -> DictConfig:
    """``schema`` defaults <- layers, type-checked; raises :class:`ConfigError` naming the key."""
    try:
        cfg = OmegaConf.merge(*([OmegaConf.structured(schema)] if schema else []), *layers)
    except OmegaConfBaseException as e:
        raise _omegaconf_error(e) from None
    if readonly:
        OmegaConf.set_readonly(cfg, True)
    return cfg  # type: ignore[return-value]


def check_missing(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming the first required (``???``) key that is not set."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        fail(missing[0], "required (??? in the config): set it, e.g. as an override")


def load_config(schema: type[T], source: Source = None, overrides: Sequence[str] | Mapping[str, Any] | None = None,
                renamed: Mapping[str, str] | None = None) -> T:
    """Load a job config: ``schema`` defaults <- YAML/mapping ``source`` <- dotlist ``overrides``.

    Args:
        schema: the job's config dataclass.
        source: YAML path, a mapping, or None for the defaults.
        overrides: omegaconf dotlist, e.g. ``["model=models:/codec@prod", "compute.actors=2"]``.
        renamed: old dotted key -> new dotted key; an old key fails naming the new one.

    Returns:
        An instance of ``schema`` (values type-checked, nothing missing).

    Raises:
        ConfigError: unknown key, wrong type, missing value or renamed key; the message starts with the key.
        FileNotFoundError: ``source`` names a missing file.
    """
    cfg = merge(schema, *read_layers(source, overrides, renamed))
    check_missing(cfg)
    try:
        return OmegaConf.to_object(cfg)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise _omegaconf_error(e) from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config (dataclass or ``DictConfig``) as plain containers, e.g. for logging or shipping to Ray."""
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.structured(cfg)
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def to_yaml(cfg: Any) -> str:
    """A config (dataclass or ``DictConfig``) as resolved YAML, e.g. to store beside a checkpoint."""
    return OmegaConf.to_yaml(cfg if isinstance(cfg, DictConfig) else OmegaConf.structured(cfg), resolve=True)
