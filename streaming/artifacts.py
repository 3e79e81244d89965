"""Model artifacts: skops bytes, content-addressed storage, and loading that checks first.

An artifact is a fitted estimator serialized with :func:`skops.io.dumps` (never raw pickle).
Stores are content-addressed: the address of an artifact contains its SHA-256, so writing the
same bytes twice is harmless and a reader can tell whether the bytes it got are the ones the
registry recorded.

:func:`load_model` is the only way streammon turns bytes back into an estimator, and it is
strict about it:

1. the SHA-256 of the bytes must equal the one recorded by the registry, else
   :class:`~streaming.errors.ArtifactIntegrityError` and nothing is deserialized;
2. every type skops does not trust by default must come from an allowed package
   (:data:`ALLOWED_MODULE_PREFIXES`, minus the functions in :data:`DENIED_NAMES`), else
   :class:`~streaming.errors.UntrustedArtifactError` listing the offending types. Nothing is
   ever loaded with blanket trust.

>>> from sklearn.linear_model import LogisticRegression
>>> model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
>>> data = dump_model(model)
>>> loaded = load_model(data, expected_sha256=sha256_of(data))
>>> loaded.predict([[2.5]]).tolist()
[1]
>>> load_model(data + b" ", expected_sha256=sha256_of(data))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
streaming.errors.ArtifactIntegrityError: artifact sha256 mismatch: expected ..., got ...
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from streaming.errors import ArtifactIntegrityError, ConfigError, UntrustedArtifactError

__all__ = [
    "ALLOWED_MODULE_PREFIXES",
    "DENIED_NAMES",
    "Artifact",
    "ArtifactStore",
    "LocalArtifactStore",
    "artifact_store_for",
    "dump_model",
    "load_model",
    "sha256_of",
    "untrusted_types",
]

ALLOWED_MODULE_PREFIXES: Final = ("sklearn.", "numpy.", "scipy.")
"""Packages whose types an artifact may need beyond skops' defaults.

What skops 0.16 reports as untrusted for the pipelines the trainer builds (ColumnTransformer,
SimpleImputer, StandardScaler, OneHotEncoder, LogisticRegression / Ridge, RandomForest*,
HistGradientBoosting*): ``numpy.dtype``, ``sklearn.tree._tree.Tree`` and
``sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor``.

``builtins.`` is deliberately *not* a prefix: ``builtins.eval``, ``builtins.exec`` or
``builtins.getattr`` would all qualify. The builtin data types skops needs are trusted by
skops itself.
"""

DENIED_NAMES: Final = frozenset(
    {
        "eval",
        "exec",
        "compile",
        "system",
        "popen",
        "load",
        "loads",
        "loadtxt",
        "genfromtxt",
        "fromfile",
        "memmap",
        "save",
        "savez",
        "savez_compressed",
        "savetxt",
        "tofile",
    }
)
"""Last name components refused even inside an allowed package (file and code access)."""

SKOPS_SUFFIX: Final = ".skops"


def sha256_of(data: bytes) -> str:
    """Hex SHA-256 of ``data``.

    >>> sha256_of(b"")[:16]
    'e3b0c44298fc1c14'
    """
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Artifact:
    """Where an artifact was stored, and what it is."""

    uri: str
    sha256: str
    size: int


class ArtifactStore(Protocol):
    """Content-addressed blob storage for model artifacts.

    Implementations must make :meth:`put` idempotent and atomic: the same bytes give the same
    URI, and a reader never sees a partly written artifact at that URI. :meth:`get` returns
    the stored bytes without interpreting them (integrity is checked by :func:`load_model`
    against the SHA-256 the registry recorded, so a store need not be trusted).

    :class:`LocalArtifactStore` (``file://`` URIs, a local or shared file system) is the one
    shipped. An object store (``s3://bucket/<model>/<sha256>.skops``) fits the same Protocol:
    ``put`` uploads under the content address (a conditional or plain PUT of identical bytes
    is idempotent), ``get`` downloads; pass one as ``artifact_store=`` to the registry and to
    :class:`streaming.client.ChampionModel`.
    """

    def put(self, model: str, data: bytes) -> Artifact:
        """Store ``data`` for ``model`` at its content address; return where it is."""
        ...

    def get(self, uri: str) -> bytes:
        """The bytes stored at ``uri`` (as returned by :meth:`put`)."""
        ...


class LocalArtifactStore:
    """Artifacts as files ``<root>/<model>/<sha256>.skops`` (``~`` in the root is expanded).

    >>> import tempfile
    >>> store = LocalArtifactStore(tempfile.mkdtemp())
    >>> art = store.put("churn", b"model bytes")
    >>> art.uri.startswith("file://"), art.uri.endswith(f"/churn/{art.sha256}.skops"), art.size
    (True, True, 11)
    >>> store.put("churn", b"model bytes") == art  # idempotent
    True
    >>> store.get(art.uri)
    b'model bytes'
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(os.path.expanduser(os.fspath(root))).resolve()

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    def path_for(self, model: str, sha256: str) -> Path:
        """The file an artifact of ``model`` with this digest lives in."""
        if not model or model in (".", "..") or "/" in model or "\\" in model or "\0" in model:
            msg = f"model name {model!r} cannot be used as a directory name"
            raise ConfigError(msg)
        return self.root / model / f"{sha256}{SKOPS_SUFFIX}"

    def put(self, model: str, data: bytes) -> Artifact:
        digest = sha256_of(data)
        path = self.path_for(model, digest)
        artifact = Artifact(path.as_uri(), digest, len(data))
        if path.is_file() and path.stat().st_size == len(data) and _file_sha(path) == digest:
            return artifact
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{digest[:12]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(path.parent)
        return artifact

    def get(self, uri: str) -> bytes:
        return _path_of_file_uri(uri).read_bytes()


def artifact_store_for(uri: str, root: str | os.PathLike[str] | None = None) -> ArtifactStore:
    """A store that can read ``uri``: a :class:`LocalArtifactStore` for ``file://`` URIs.

    >>> artifact_store_for("s3://bucket/m/abc.skops")
    Traceback (most recent call last):
    ...
    streaming.errors.ConfigError: no artifact store for 's3://' URIs; pass artifact_store=
    """
    scheme = urlparse(uri).scheme
    if scheme == "file":
        return LocalArtifactStore(root if root is not None else _path_of_file_uri(uri).parent)
    msg = f"no artifact store for {scheme + '://'!r} URIs; pass artifact_store="
    raise ConfigError(msg)


def _path_of_file_uri(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        msg = f"not a local file URI: {uri!r}"
        raise ConfigError(msg)
    return Path(url2pathname(unquote(parsed.path)))


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- skops ---------------------------------------------------------------------------------


def dump_model(estimator: Any) -> bytes:
    """The skops serialization of a fitted estimator."""
    import skops.io as sio  # type: ignore[import-untyped,unused-ignore]

    data: bytes = sio.dumps(estimator)
    return data


def untrusted_types(
    data: bytes, *, extra_allowed: Iterable[str] = ()
) -> tuple[list[str], list[str]]:
    """``(trusted, refused)``: the types skops does not trust by default, split by our policy.

    A type is trusted when it is named in ``extra_allowed``, or when it starts with one of
    :data:`ALLOWED_MODULE_PREFIXES` and its last component is not in :data:`DENIED_NAMES`.
    """
    import skops.io as sio  # type: ignore[import-untyped,unused-ignore]

    allowed_exact = set(extra_allowed)
    trusted: list[str] = []
    refused: list[str] = []
    for name in sio.get_untrusted_types(data=data):
        name = str(name)
        last = name.rsplit(".", 1)[-1]
        if name in allowed_exact or (
            name.startswith(ALLOWED_MODULE_PREFIXES) and last not in DENIED_NAMES
        ):
            trusted.append(name)
        else:
            refused.append(name)
    return trusted, refused


def load_model(data: bytes, *, expected_sha256: str, extra_allowed: Iterable[str] = ()) -> Any:
    """Deserialize an artifact after checking its digest and the types it needs.

    Raises :class:`ArtifactIntegrityError` (naming both digests) when the bytes are not the
    recorded ones, and :class:`UntrustedArtifactError` (listing the types) when the artifact
    needs a type outside the allowlist; in both cases nothing is deserialized.
    ``extra_allowed`` names further types (exact names) to trust, e.g. a project's own
    transformer class.
    """
    actual = sha256_of(data)
    if actual != expected_sha256.lower():
        msg = f"artifact sha256 mismatch: expected {expected_sha256}, got {actual}"
        raise ArtifactIntegrityError(msg)
    try:
        trusted, refused = untrusted_types(data, extra_allowed=extra_allowed)
    except Exception as exc:  # not a skops file at all (zip or schema errors)
        msg = f"artifact {actual} is not a readable skops file: {type(exc).__name__}: {exc}"
        raise ArtifactIntegrityError(msg) from exc
    if refused:
        msg = (
            f"artifact {actual} needs types outside the allowlist, refusing to load it: "
            + ", ".join(sorted(refused))
        )
        raise UntrustedArtifactError(msg)
    import skops.io as sio  # type: ignore[import-untyped,unused-ignore]

    return sio.loads(data, trusted=trusted)
