"""Transport: local paths and S3 objects, one interface for both (models are resolved and
cached in ``texprod.models``; this module knows nothing of them).

One interface for local paths and ``s3://bucket/key`` URIs:

- ``upload_file`` / ``upload_bytes``: an object appears at its final key only when complete
  (multipart uploads become visible on CompleteMultipartUpload, and every failure aborts
  the multipart upload; a single PUT is atomic). Every upload carries an SHA-256 checksum
  that S3 verifies, and the whole file's SHA-256 in the object's metadata (``sha256``).
- ``download_file``: into a temporary file beside the target, checked (size, SHA-256), then
  renamed; nothing partial is left on failure.

S3 settings come from the standard AWS chain (environment, ``AWS_PROFILE``, config files,
instance roles) plus these variables:

=============================  ==============================================================
``AWS_ENDPOINT_URL``           S3-compatible endpoint (MinIO, moto); honoured by boto3 itself
``AWS_REGION``                 region (else ``AWS_DEFAULT_REGION``, else us-east-1)
``TEXPROD_S3_MAX_ATTEMPTS``    attempts per request, including the first (default 5)
``TEXPROD_S3_CONNECT_TIMEOUT`` seconds (default 10)
``TEXPROD_S3_READ_TIMEOUT``    seconds (default 60)
``TEXPROD_S3_PART_SIZE``       multipart part size and threshold in bytes (default 16 MiB)
``TEXPROD_S3_CONCURRENCY``     parallel part transfers (default 8)
``TEXPROD_S3_ADDRESSING_STYLE`` auto | path | virtual (default: path with a custom endpoint)
``TEXPROD_S3_PUBLIC_URL``      the endpoint as browsers reach it, for presigned links (default:
                               the endpoint itself)
``TEXPROD_CACHE``              local cache directory (default ~/.cache/texprod)
``TEXPROD_REGISTRY``           model registry, ``s3://BUCKET[/prefix]`` (texprod.models.registry)
=============================  ==============================================================
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import logging
import mimetypes
import os
import re
import shutil
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from s3transfer.exceptions import RetriesExceededError
from s3transfer.subscribers import BaseSubscriber

from texprod.errors import ConfigError, TexprodError
from texprod.files import atomic_output, atomic_write_bytes, sha256_file

log = logging.getLogger(__name__)


S3_SCHEME = "s3://"
DEFAULT_REGION = "us-east-1"
MiB = 2**20
DEFAULT_PART_SIZE = 16 * MiB
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
MAX_PRESIGN_S = 7 * 24 * 3600  # SigV4 presigned URLs live at most 7 days
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_META_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_CREDENTIAL_CODES = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "InvalidClientTokenId", "AuthFailure", "UnrecognizedClientException",
}
_DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "403", "Forbidden"}


# -- errors --------------------------------------------------------------------------------


class StorageError(TexprodError):
    """A transfer or lookup that failed; the message names the URI and the cause."""

    transient = False  # worth retrying later (the flow retries only these)

    @property
    def exit_code(self) -> int:  # a store that failed is a job failure, a wrong name is not
        return 1 if self.transient else 2


class NoSuchObject(StorageError):
    """The object (or the local file) does not exist."""


class NoSuchBucket(StorageError):
    """The bucket does not exist."""


class CredentialsError(StorageError):
    """No credentials were found, or the server rejected them."""


class AccessDenied(StorageError):
    """The credentials are valid but lack permission."""


class EndpointUnreachable(StorageError):
    """The S3 endpoint could not be reached (after the configured retries)."""

    transient = True


class IntegrityError(StorageError):
    """Transferred bytes that do not match their size or checksum."""

    transient = True


# -- URIs ----------------------------------------------------------------------------------


def is_s3(uri: str | os.PathLike) -> bool:
    """Whether `uri` is an ``s3://`` URI (anything else is a local path)."""
    return isinstance(uri, str) and uri.startswith(S3_SCHEME)


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ("bucket", "some/key"); the key may be empty."""
    if not is_s3(uri):
        raise StorageError(f"{uri!r}: not an S3 URI, expected s3://BUCKET/KEY")
    bucket, _, key = uri[len(S3_SCHEME):].partition("/")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise StorageError(
            f"{uri!r}: bucket {bucket!r} is not a valid bucket name (3-63 characters: "
            "lowercase letters, digits, '.' and '-', starting and ending with a letter or digit)"
        )
    return bucket, key


def join_uri(base: str, *parts: str) -> str:
    """Append path parts to an S3 URI or a local path."""
    if is_s3(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base).joinpath(*parts))


def split_object(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ("bucket", "key"), refusing a bucket or a prefix."""
    bucket, key = split_s3(uri)
    if not key or key.endswith("/"):
        raise StorageError(f"{uri!r}: names a bucket or a prefix, expected s3://BUCKET/KEY")
    return bucket, key


def check_location(uri: str | os.PathLike) -> None:
    """Refuse a location that is neither a local path nor s3://BUCKET/KEY."""
    text = os.fspath(uri)
    if not is_s3(text) and (re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text)
                            or text.lower().startswith("s3:")):
        raise StorageError(f"{text!r}: unsupported location; use a local path or "
                           "s3://BUCKET/KEY")


# -- client --------------------------------------------------------------------------------

_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()


def _env_number(name: str, default: float, minimum: float, kind: type = int) -> Any:
    text = os.environ.get(name, "").strip()
    if not text:
        return kind(default)
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"{name}: got {text!r}, must be a number >= {minimum}") from None
    if value < minimum:
        raise ConfigError(f"{name}: got {text!r}, must be >= {minimum}")
    return value


def s3_endpoint() -> str | None:
    """The S3 endpoint the environment names; None for AWS itself."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_public_endpoint() -> str | None:
    """``TEXPROD_S3_PUBLIC_URL``: the S3 endpoint as the operator's browser reaches it, where
    that differs from the endpoint texprod uses (``http://minio:9000`` inside the compose
    stack is ``http://localhost:9000`` on the host). None: the same endpoint."""
    value = os.environ.get("TEXPROD_S3_PUBLIC_URL", "").strip()
    if not value:
        return None
    url = urllib.parse.urlsplit(value)
    try:
        url.port  # noqa: B018 - raises on a port that is not a number in 0-65535
        valid = url.scheme in ("http", "https") and bool(url.hostname) \
            and url.path in ("", "/") and not (url.query or url.fragment or url.username)
    except ValueError:
        valid = False
    if not valid:
        raise ConfigError(f"TEXPROD_S3_PUBLIC_URL: got {value!r}, must be http(s)://HOST[:PORT] "
                          "(the S3 endpoint as browsers reach it, e.g. http://localhost:9000)")
    return value.rstrip("/")


def s3_region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def max_attempts() -> int:
    return _env_number("TEXPROD_S3_MAX_ATTEMPTS", 5, 1)


def s3_client(endpoint: str | None = None) -> Any:
    """A boto3 S3 client with texprod's settings, cached per endpoint and region.

    Credentials come from boto3's standard chain, the endpoint from `endpoint` or else the
    environment (``s3_endpoint``). Requests are retried (standard mode: exponential backoff
    with jitter on throttling, 5xx and connection errors) up to ``TEXPROD_S3_MAX_ATTEMPTS``
    attempts. Checksums are only computed or validated where texprod asks for them, so
    S3-compatible stores that reject the default CRC trailers work too.
    """
    endpoint = endpoint or s3_endpoint()
    region = s3_region()
    attempts = max_attempts()
    connect = _env_number("TEXPROD_S3_CONNECT_TIMEOUT", 10, 0.1, float)
    read = _env_number("TEXPROD_S3_READ_TIMEOUT", 60, 0.1, float)
    style = os.environ.get("TEXPROD_S3_ADDRESSING_STYLE") or ("path" if endpoint else "auto")
    if style not in ("auto", "path", "virtual"):
        raise ConfigError(f"TEXPROD_S3_ADDRESSING_STYLE: got {style!r}, "
                          "must be auto, path or virtual")
    # a fingerprint of the credential settings is part of the key, so that credentials
    # changed in the environment take effect (boto3 reads them when a client is made)
    credentials = hashlib.sha256("\0".join(os.environ.get(k, "") for k in (
        "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    )).encode()).hexdigest()
    key = (endpoint, region, attempts, connect, read, style, credentials)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            config = Config(
                region_name=region,
                signature_version="s3v4",
                s3={"addressing_style": style},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                # botocore's "max_attempts" counts retries (N + 1 requests in all);
                # "total_max_attempts" counts every attempt, like AWS_MAX_ATTEMPTS
                retries={"total_max_attempts": attempts, "mode": "standard"},
                connect_timeout=connect,
                read_timeout=read,
                max_pool_connections=max(10, _concurrency() + 2),
            )
            try:  # sessions are not thread-safe: one per client, made under the lock
                client = boto3.session.Session(region_name=region).client(
                    "s3", endpoint_url=endpoint, config=config)
            except BotoCoreError as e:  # e.g. AWS_PROFILE names no profile
                raise CredentialsError(f"cannot set up the S3 client: {e}") from None
            _clients[key] = client
    return client


def clear_client_cache() -> None:
    """Forget cached clients (after changing credentials in the environment, in tests)."""
    with _clients_lock:
        _clients.clear()


def _concurrency() -> int:
    return _env_number("TEXPROD_S3_CONCURRENCY", 8, 1)


def _transfer_config(part_size: int | None = None) -> Any:

    part = part_size if part_size is not None else _env_number(
        "TEXPROD_S3_PART_SIZE", DEFAULT_PART_SIZE, MIN_PART_SIZE)
    if part < MIN_PART_SIZE:
        raise ConfigError(f"part size: got {part} bytes, S3 needs at least {MIN_PART_SIZE}")
    concurrency = _concurrency()
    # s3transfer raises the part size by itself where a file would need > 10,000 parts
    config = TransferConfig(multipart_threshold=part, multipart_chunksize=part,
                            max_concurrency=concurrency, preferred_transfer_client="classic")
    # boto3's TransferConfig does not take these, s3transfer reads them: bound the parts
    # buffered in memory (default 10 of up to 16 MiB each for uploads)
    config.max_in_memory_upload_chunks = concurrency
    return config


# -- error mapping -------------------------------------------------------------------------


def _endpoint_of(client: Any | None) -> str:
    if client is not None:
        return client.meta.endpoint_url
    return s3_endpoint() or f"https://s3.{s3_region()}.amazonaws.com"


def _map_error(exc: BaseException, uri: str, action: str, client: Any | None) -> StorageError:

    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return CredentialsError(
            f"no usable S3 credentials for {uri}: {exc} (set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
        )
    if isinstance(exc, BotoConnectionError):  # EndpointConnectionError, ConnectTimeout, ...
        return EndpointUnreachable(
            f"cannot reach the S3 endpoint {_endpoint_of(client)} to {action} {uri} "
            f"(tried {max_attempts()} times): {exc}; is the endpoint right "
            "(AWS_ENDPOINT_URL) and the server up?"
        )
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = error.get("Message") or ""
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        bucket = split_s3(uri)[0] if is_s3(uri) else uri
        if code in ("NoSuchKey", "404", "NotFound"):
            return NoSuchObject(f"{uri}: no such object")
        if code == "NoSuchBucket":
            return NoSuchBucket(f"s3://{bucket}: no such bucket (at {_endpoint_of(client)}; "
                                f"needed to {action} {uri})")
        if code in _CREDENTIAL_CODES:
            return CredentialsError(
                f"S3 credentials rejected for {uri}: {code}: {message} (check "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN or AWS_PROFILE, "
                f"and that they belong to {_endpoint_of(client)})"
            )
        if code in _DENIED_CODES:
            return AccessDenied(f"access denied to {uri} ({action}): "
                                f"{message or 'HTTP 403 Forbidden'}")
        if code in ("PreconditionFailed", "412"):
            return IntegrityError(f"{uri}: the object changed while it was being read "
                                  f"({action}); try again")
        return StorageError(f"{uri}: S3 {action} failed: {code or status}: {message}")

    if isinstance(exc, RetriesExceededError):
        return EndpointUnreachable(f"{uri}: {action} kept failing: {exc.last_exception}")
    if isinstance(exc, BotoCoreError):
        return StorageError(f"{uri}: S3 {action} failed: {exc}")
    raise TypeError(f"not an S3 error: {exc!r}")


@contextlib.contextmanager
def _s3_errors(uri: str, action: str, client: Any | None = None) -> Iterator[None]:
    """Turn botocore / s3transfer errors into StorageError subclasses naming the cause."""
    try:
        yield
    except (ClientError, BotoCoreError, RetriesExceededError) as e:
        raise _map_error(e, uri, action, client) from e


def _diagnose(client: Any, uri: str, action: str) -> None:
    """After a HEAD answered 403 / 404 (HEAD responses have no error body): ask a request
    that does carry an error code, so missing buckets and bad credentials are named."""
    bucket, key = split_s3(uri)
    with _s3_errors(uri, action, client):
        client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)


def _head(client: Any, uri: str, action: str = "look up") -> dict[str, Any] | None:
    """HEAD an object: its headers, or None if the bucket exists and the key does not."""
    bucket, key = split_object(uri)
    try:
        with _s3_errors(uri, action, client):
            return client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except StorageError as e:
        if not isinstance(e.__cause__, ClientError):
            raise
        _diagnose(client, uri, action)  # raises NoSuchBucket, CredentialsError, ...
        if isinstance(e, NoSuchObject):
            return None
        raise


def ensure_bucket(name: str) -> bool:
    """Create bucket `name` unless it exists (an operator's local S3 server, MinIO, moto).

    Returns True when it was created. (AWS's us-east-1 answers a create of a bucket one
    already owns with success, so existence is asked first: a listing, because a HEAD's
    404 carries no error code to tell a missing bucket by.)
    """
    client = s3_client()
    uri = f"s3://{name}"
    try:
        with _s3_errors(uri, "look up"):
            client.list_objects_v2(Bucket=name, MaxKeys=1)
        return False
    except NoSuchBucket:
        pass
    with _s3_errors(uri, "create"):
        kwargs = {}
        if s3_region() != "us-east-1":  # AWS refuses the default region as a constraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": s3_region()}
        client.create_bucket(Bucket=name, **kwargs)
    return True


# -- helpers -------------------------------------------------------------------------------


def _metadata(metadata: dict[str, str] | None, sha256: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (metadata or {}).items():
        k = str(key).lower()
        v = str(value)
        if not _META_KEY_RE.match(k):
            raise StorageError(f"metadata: key {key!r} must be lowercase letters, digits and "
                               "'-' (S3 sends metadata as HTTP headers)")
        if not v.isascii() or any(ord(c) < 32 for c in v):
            raise StorageError(f"metadata.{key}: got {value!r}, must be printable ASCII")
        out[k] = v
    out.setdefault("sha256", sha256)
    if sum(len(k) + len(v) for k, v in out.items()) > 2048:
        raise StorageError("metadata: more than 2 KB in total (S3's limit for user metadata)")
    return out


def _content_type(name: str, content_type: str | None) -> str:
    if content_type:
        return content_type
    guessed, _ = mimetypes.guess_type(name)
    if name.endswith(".json"):
        return "application/json"
    return guessed or "application/octet-stream"


def _etag(value: str | None) -> str | None:
    return value.strip('"') if value else value


def _subscribers(progress: Callable[[int], None] | None = None, size: int | None = None,
                 etag: str | None = None) -> list[Any]:
    """s3transfer subscribers: forward the bytes transferred to `progress(int)`; give a
    download the size and ETag we already know (it then skips its own HEAD, and every
    ranged GET carries If-Match: that ETag, so a concurrent overwrite fails the download)."""
    class Subscriber(BaseSubscriber):
        def on_queued(self, future: Any, **kwargs: Any) -> None:
            if size is not None and etag is not None:
                future.meta.provide_transfer_size(size)
                future.meta.provide_object_etag(etag)

        def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
            if progress is not None:
                progress(bytes_transferred)

    return [Subscriber()]


def _atomic_copy(src: Path, dest: Path, expected_sha256: str | None = None) -> str:
    with atomic_output(dest) as tmp:
        shutil.copyfile(src, tmp)
        digest = sha256_file(tmp)
        if expected_sha256 and digest != expected_sha256:
            raise IntegrityError(f"{src}: sha256 {digest} does not match the expected "
                                 f"{expected_sha256}")
    return digest


# -- transfers -----------------------------------------------------------------------------


def upload_file(
    local: str | os.PathLike,
    uri: str,
    metadata: dict[str, str] | None = None,
    content_type: str | None = None,
    *,
    part_size: int | None = None,
    progress: Callable[[int], None] | None = None,
    sha256: str | None = None,
) -> dict[str, Any]:
    """Upload a file; the object appears at `uri` only when complete.

    Files above the part size (default 16 MiB, ``TEXPROD_S3_PART_SIZE``) go up as a parallel
    multipart upload that any failure (or Ctrl-C) aborts; smaller ones as one PUT. Every
    request carries an SHA-256 checksum the server verifies, and the object's metadata gets
    the whole file's ``sha256`` (besides `metadata`). A local `uri` is an atomic copy.
    `progress` is called with byte counts as they are sent. Pass the file's `sha256` when
    it is known, so that a large file is not read once more to hash it.

    Returns {"uri", "etag", "sha256", "bytes"} (etag is None for local copies).
    """
    check_location(uri)
    src = Path(local)
    if not src.is_file():
        raise NoSuchObject(f"{src}: no such file to upload")
    size = src.stat().st_size
    digest = sha256 or sha256_file(src)
    meta = _metadata(metadata, digest)
    if not is_s3(uri):
        dest = Path(uri)
        _atomic_copy(src, dest, digest)
        return {"uri": str(dest), "etag": None, "sha256": digest, "bytes": size}

    bucket, key = split_object(uri)
    client = s3_client()
    extra = {"Metadata": meta, "ContentType": _content_type(src.name, content_type),
             "ChecksumAlgorithm": "SHA256"}
    subscribers = _subscribers(progress)
    log.info("uploading %s (%d bytes) to %s", src, size, uri)
    with _s3_errors(uri, "upload", client):
        # s3transfer registers abort_multipart_upload as a failure cleanup as soon as the
        # upload is created; leaving the `with` on an exception (KeyboardInterrupt included)
        # cancels outstanding parts and runs it, so no multipart upload is left behind.
        with create_transfer_manager(client, _transfer_config(part_size)) as manager:
            future = manager.upload(str(src), bucket, key, extra_args=extra,
                                    subscribers=subscribers)
            future.result()
        head = client.head_object(Bucket=bucket, Key=key)
    if head["ContentLength"] != size:
        raise IntegrityError(f"{uri}: uploaded {size} bytes, the server holds "
                             f"{head['ContentLength']}")
    return {"uri": uri, "etag": _etag(head.get("ETag")), "sha256": digest, "bytes": size}


def upload_bytes(
    data: bytes,
    uri: str,
    metadata: dict[str, str] | None = None,
    content_type: str | None = None,
) -> dict[str, Any]:
    """Upload bytes as one object (one PUT with an SHA-256 checksum; atomic)."""
    check_location(uri)
    digest = hashlib.sha256(data).hexdigest()
    meta = _metadata(metadata, digest)
    if not is_s3(uri):
        atomic_write_bytes(Path(uri), data)
        return {"uri": uri, "etag": None, "sha256": digest, "bytes": len(data)}
    bucket, key = split_object(uri)
    client = s3_client()
    checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
    with _s3_errors(uri, "upload", client):
        response = client.put_object(
            Bucket=bucket, Key=key, Body=data, Metadata=meta,
            ContentType=_content_type(key.rsplit("/", 1)[-1], content_type),
            ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum,
        )
    return {"uri": uri, "etag": _etag(response.get("ETag")), "sha256": digest,
            "bytes": len(data)}


def download_file(
    uri: str,
    local: str | os.PathLike,
    expected_sha256: str | None = None,
    *,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Download an object to `local` (replacing it), verified, atomically.

    The bytes go to a temporary file in the target's directory; the size must match the
    object's and the SHA-256 must match `expected_sha256` (or, if not given, the ``sha256``
    the object's metadata records, when it has one) before the file is renamed into place.
    Ranged parallel GETs are pinned to the object's ETag, so a concurrent overwrite fails
    instead of mixing versions. Returns {"uri", "path", "etag", "sha256", "bytes"}.
    """
    check_location(uri)
    dest = Path(local)
    if expected_sha256 is not None and not _SHA256_RE.match(expected_sha256):
        raise ConfigError(f"expected_sha256: got {expected_sha256!r}, must be 64 hex digits")
    if not is_s3(uri):
        src = Path(uri)
        if not src.is_file():
            raise NoSuchObject(f"{src}: no such file")
        digest = _atomic_copy(src, dest, expected_sha256)
        return {"uri": uri, "path": dest, "etag": None, "sha256": digest,
                "bytes": dest.stat().st_size}

    bucket, key = split_object(uri)
    client = s3_client()
    head = _head(client, uri, "download")
    if head is None:
        raise NoSuchObject(f"{uri}: no such object")
    size, etag = head["ContentLength"], head.get("ETag")
    recorded = head.get("Metadata", {}).get("sha256")
    want, source = (expected_sha256, "the expected") if expected_sha256 else (
        (recorded, "the object's metadata") if recorded and _SHA256_RE.match(recorded)
        else (None, ""))
    subscribers = _subscribers(progress, size, etag)
    with atomic_output(dest) as tmp:
        with open(tmp, "wb") as f, _s3_errors(uri, "download", client), \
                create_transfer_manager(client, _transfer_config()) as manager:
            manager.download(bucket, key, f, subscribers=subscribers).result()
        got = os.path.getsize(tmp)
        if got != size:
            raise IntegrityError(f"{uri}: downloaded {got} bytes, the object has {size}")
        digest = sha256_file(tmp)
        if want and digest != want:
            raise IntegrityError(f"{uri}: sha256 mismatch: the download has {digest}, "
                                 f"{source} sha256 is {want}")
    return {"uri": uri, "path": dest, "etag": _etag(etag), "sha256": digest, "bytes": size}


def read_bytes(uri: str) -> bytes:
    """The whole content of an object (or local file); for small things like model cards."""
    return read_with_etag(uri)[0]


def read_with_etag(uri: str) -> tuple[bytes, str | None]:
    """An object's content and the ETag of that content (None for a local file)."""
    check_location(uri)
    if not is_s3(uri):
        path = Path(uri)
        if not path.is_file():
            raise NoSuchObject(f"{path}: no such file")
        return path.read_bytes(), None
    bucket, key = split_object(uri)
    client = s3_client()
    with _s3_errors(uri, "read", client):
        response = client.get_object(Bucket=bucket, Key=key)
        with contextlib.closing(response["Body"]) as body:
            data = body.read()
    if len(data) != response["ContentLength"]:
        raise IntegrityError(f"{uri}: read {len(data)} bytes, expected "
                             f"{response['ContentLength']}")
    return data, _etag(response.get("ETag"))


def exists(uri: str) -> bool:
    """Whether the object (or local path) exists. A missing bucket is an error, not False."""
    check_location(uri)
    if not is_s3(uri):
        return Path(uri).exists()
    return _head(s3_client(), uri) is not None


def head(uri: str, action: str = "look up") -> dict[str, Any] | None:
    """An object's size, ETag, metadata, content type and checksum; None if missing.
    `action` says what for in errors (e.g. "fetch the model")."""
    response = _head(s3_client(), uri, action)
    if response is None:
        return None
    return {"uri": uri, "bytes": response["ContentLength"], "etag": _etag(response.get("ETag")),
            "metadata": response.get("Metadata", {}), "content_type": response.get("ContentType"),
            "checksum_sha256": response.get("ChecksumSHA256"),
            "last_modified": response.get("LastModified")}


def list_objects(prefix_uri: str) -> list[dict[str, Any]]:
    """Objects whose URI starts with `prefix_uri`: {"uri", "key", "bytes", "etag",
    "last_modified"}, sorted by URI. A local prefix lists the files below a directory."""
    check_location(prefix_uri)
    if not is_s3(prefix_uri):
        root = Path(prefix_uri)
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
        return [{"uri": str(p), "key": str(p), "bytes": p.stat().st_size, "etag": None,
                 "last_modified": dt.datetime.fromtimestamp(p.stat().st_mtime, dt.UTC)}
                for p in files]
    bucket, prefix = split_s3(prefix_uri)
    client = s3_client()
    out = []
    with _s3_errors(prefix_uri, "list", client):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                     Prefix=prefix):
            for item in page.get("Contents", []):
                out.append({"uri": f"{S3_SCHEME}{bucket}/{item['Key']}", "key": item["Key"],
                            "bytes": item["Size"], "etag": _etag(item.get("ETag")),
                            "last_modified": item.get("LastModified")})
    return sorted(out, key=lambda o: o["uri"])


def list_keys(prefix_uri: str) -> list[str]:
    """URIs of the objects under `prefix_uri` (a plain string prefix), sorted."""
    return [o["uri"] for o in list_objects(prefix_uri)]


def delete(uri: str) -> None:
    """Delete an object or a local file (no error if it is already gone)."""
    check_location(uri)
    if not is_s3(uri):
        Path(uri).unlink(missing_ok=True)
        return
    bucket, key = split_object(uri)
    client = s3_client()
    with _s3_errors(uri, "delete", client):
        client.delete_object(Bucket=bucket, Key=key)


def presigned_url(uri: str, expires_s: int = MAX_PRESIGN_S) -> str:
    """A URL anyone can GET the object with, for `expires_s` seconds (at most 7 days), at
    the endpoint browsers reach (``TEXPROD_S3_PUBLIC_URL``, else texprod's own).

    It is signed locally: it does not check that the object exists. SigV4 signs the host,
    so the link is signed for the public endpoint, not rewritten to it afterwards. A local
    path gives its file:// URI.
    """
    check_location(uri)
    if not 1 <= expires_s <= MAX_PRESIGN_S:
        raise ConfigError(f"expires_s: got {expires_s}, must be between 1 and {MAX_PRESIGN_S} "
                          "(7 days, the limit of SigV4 presigned URLs)")
    if not is_s3(uri):
        return Path(uri).resolve().as_uri()
    bucket, key = split_object(uri)
    client = s3_client(s3_public_endpoint())
    with _s3_errors(uri, "presign", client):
        return client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                             ExpiresIn=int(expires_s))


# -- model cache ---------------------------------------------------------------------------


def cache_root() -> Path:
    """The local cache directory: ``TEXPROD_CACHE``, default ``~/.cache/texprod``."""
    return Path(os.environ.get("TEXPROD_CACHE") or "~/.cache/texprod").expanduser()
