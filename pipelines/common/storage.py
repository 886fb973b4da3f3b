"""Local and ``s3://`` storage: filesystems, listing, globbing and atomic writes.

Credentials and the endpoint come from a :class:`StorageConfig` or, when its fields are empty, from the
usual AWS environment variables. They are handed to s3fs and nowhere else: never printed, never logged
(``StorageConfig.__repr__`` redacts them).
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from dataclasses import dataclass, fields
from typing import Any

import fsspec


@dataclass
class StorageConfig:
    """Where ``s3://`` paths live. Empty fields fall back to the AWS environment variables.

    Attributes:
        endpoint_url: S3 endpoint (e.g. a MinIO or moto server); env ``AWS_ENDPOINT_URL_S3`` /
            ``AWS_ENDPOINT_URL``.
        key: access key id; env ``AWS_ACCESS_KEY_ID``.
        secret: secret key; env ``AWS_SECRET_ACCESS_KEY``.
        region: region name; env ``AWS_DEFAULT_REGION``.
        anon: anonymous access (public buckets).
    """

    endpoint_url: str | None = None
    key: str | None = None
    secret: str | None = None
    region: str | None = None
    anon: bool = False

    def resolved(self) -> StorageConfig:
        """A copy with empty fields filled from the environment of *this* process.

        Resolve on the driver: Ray workers may have been started before the variables were set.
        """
        env = os.environ
        return StorageConfig(
            endpoint_url=self.endpoint_url or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
            key=None if self.anon else (self.key or env.get("AWS_ACCESS_KEY_ID")),
            secret=None if self.anon else (self.secret or env.get("AWS_SECRET_ACCESS_KEY")),
            region=self.region or env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION"),
            anon=self.anon)

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("key", "secret"):
            if shown[name]:
                shown[name] = "***"
        return f"StorageConfig({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


def is_s3(path: str) -> bool:
    """True for ``s3://`` URIs."""
    return str(path).startswith("s3://")


def storage_from_any(cfg: Any) -> StorageConfig:
    """Build a :class:`StorageConfig` from ``None``, a dict, an omegaconf node or a StorageConfig."""
    if cfg is None:
        return StorageConfig()
    if isinstance(cfg, StorageConfig):
        return cfg
    names = {f.name for f in fields(StorageConfig)}
    return StorageConfig(**{k: cfg[k] for k in cfg if k in names})


def s3_filesystem(storage: StorageConfig | None = None) -> fsspec.AbstractFileSystem:
    """An s3fs filesystem with credentials resolved on the caller (so Ray workers get them pickled in).

    Args:
        storage: explicit settings; empty fields are read from the environment.
    """
    import s3fs

    st = (storage or StorageConfig()).resolved()
    kwargs: dict[str, Any] = {"anon": bool(st.anon)}
    if st.key and st.secret:
        kwargs.update(key=st.key, secret=st.secret)
    client_kwargs: dict[str, Any] = {}
    if st.endpoint_url:
        client_kwargs["endpoint_url"] = st.endpoint_url
    if st.region:
        client_kwargs["region_name"] = st.region
    return s3fs.S3FileSystem(client_kwargs=client_kwargs, skip_instance_cache=True, **kwargs)


def filesystem_for(path: str, storage: StorageConfig | None = None) -> fsspec.AbstractFileSystem:
    """The fsspec filesystem serving ``path`` (s3fs for ``s3://``, the local one otherwise)."""
    if is_s3(path):
        return s3_filesystem(storage)
    return fsspec.filesystem("file")


def strip_scheme(path: str) -> str:
    """``s3://bucket/key`` -> ``bucket/key``; local paths are made absolute."""
    if is_s3(path):
        return path[len("s3://"):]
    return os.path.abspath(path)


def join(root: str, *parts: str) -> str:
    """Join path parts, keeping an ``s3://`` scheme intact."""
    if is_s3(root):
        return "s3://" + posixpath.join(strip_scheme(root).rstrip("/"), *parts)
    return os.path.join(root, *parts)


def pyarrow_filesystem(path: str, storage: StorageConfig | None = None):
    """A pyarrow filesystem for Ray Data readers (``None`` for local paths: Ray's default)."""
    if not is_s3(path):
        return None
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return PyFileSystem(FSSpecHandler(s3_filesystem(storage)))


def write_bytes_atomic(path: str, data: bytes, fs: fsspec.AbstractFileSystem) -> None:
    """Write ``data`` so that readers see either nothing or the whole file.

    Local: a temp file in the same folder, fsync, then ``os.replace``. S3: one PUT (or one multipart
    upload, which S3 also publishes only on completion).
    """
    if is_s3(path):
        fs.pipe_file(strip_scheme(path), data)
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_bytes(path: str, fs: fsspec.AbstractFileSystem) -> bytes:
    """Read a whole file (local or S3)."""
    with fs.open(strip_scheme(path) if is_s3(path) else path, "rb") as f:
        return f.read()
