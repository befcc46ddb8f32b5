"""texprod.storage against a real S3 server (moto, over HTTP on loopback): transfers,
checksums, atomicity, error messages, retries, presigned URLs and the model cache."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import random
import socket
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.s3_server import admin_client, moto_auth
from texprod import storage
from texprod.engine import GeneratorConfig, random_generator
from texprod.errors import CheckpointError, ConfigError, TexprodError
from texprod.models import load_checkpoint, references, save_generator
from texprod.models.cache import fetch_model

TINY = GeneratorConfig(nz_local=4, nz_global=4, nz_periodic=2, filters=(16, 8))


def _write(path: Path, size: int, seed: int = 0) -> bytes:
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


def _b64sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _bucket_key(uri: str) -> tuple[str, str]:
    return storage.split_s3(uri)


@contextlib.contextmanager
def count_requests(operation: str):
    """Count S3 `operation` calls (e.g. "GetObject") made through texprod's client."""
    calls: list[str] = []
    client = storage.s3_client()
    event = f"before-call.s3.{operation}"

    def handler(**kwargs):
        calls.append(operation)

    client.meta.events.register(event, handler)
    try:
        yield calls
    finally:
        client.meta.events.unregister(event, handler)


def _no_partial_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.startswith(".")]


# -- URIs ----------------------------------------------------------------------------------


def test_uris():
    assert storage.is_s3("s3://bucket/a/b") and not storage.is_s3("out/a.tif")
    assert not storage.is_s3(Path("s3:/x"))
    assert storage.split_s3("s3://my-bucket/a/b.tif") == ("my-bucket", "a/b.tif")
    assert storage.split_s3("s3://my-bucket") == ("my-bucket", "")
    with pytest.raises(storage.StorageError, match="'out/a.tif': not an S3 URI"):
        storage.split_s3("out/a.tif")
    with pytest.raises(storage.StorageError, match="bucket 'My_Bucket' is not a valid"):
        storage.split_s3("s3://My_Bucket/k")
    with pytest.raises(storage.StorageError, match="names a bucket or a prefix"):
        storage.read_bytes("s3://my-bucket/")
    with pytest.raises(storage.StorageError, match="unsupported location"):
        storage.exists("gs://bucket/key")
    assert issubclass(storage.StorageError, TexprodError)


def test_client_is_cached_per_settings_and_thread_safe(s3_server, monkeypatch):
    clients = []
    threads = [threading.Thread(target=lambda: clients.append(storage.s3_client()))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in clients}) == 1
    assert clients[0].meta.endpoint_url == s3_server
    monkeypatch.setenv("TEXPROD_S3_MAX_ATTEMPTS", "2")
    other = storage.s3_client()
    assert other is not clients[0]
    assert other.meta.config.retries == {"total_max_attempts": 2, "mode": "standard"}
    monkeypatch.setenv("TEXPROD_S3_MAX_ATTEMPTS", "zero")
    with pytest.raises(ConfigError, match="TEXPROD_S3_MAX_ATTEMPTS: got 'zero'"):
        storage.s3_client()


# -- transfers -----------------------------------------------------------------------------


def test_upload_download_round_trip_with_metadata_and_checksum(s3_bucket, tmp_path):
    data = _write(tmp_path / "a.tif", 300_000)
    uri = f"{s3_bucket}/jobs/a.tif"
    meta = {"spec-digest": "6bc08dde0d78", "model-digest": "ab12", "seed": "42",
            "texprod-version": "0.1.0"}
    result = storage.upload_file(tmp_path / "a.tif", uri, metadata=meta)
    assert result["uri"] == uri and result["bytes"] == len(data)
    assert result["sha256"] == hashlib.sha256(data).hexdigest()

    bucket, key = _bucket_key(uri)
    head = admin_client().head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == _b64sha(data)  # the server got and kept the checksum
    assert head["Metadata"] == {**meta, "sha256": result["sha256"]}
    assert head["ContentType"] == "image/tiff"
    assert head["ETag"].strip('"') == result["etag"]

    out = tmp_path / "down" / "a.tif"
    got = storage.download_file(uri, out, expected_sha256=result["sha256"])
    assert out.read_bytes() == data and got["sha256"] == result["sha256"]
    assert _no_partial_files(out.parent)
    assert storage.read_bytes(uri) == data
    assert storage.head(uri)["metadata"]["seed"] == "42"

    with pytest.raises(storage.IntegrityError, match="sha256 mismatch"):
        storage.download_file(uri, tmp_path / "down" / "b.tif", expected_sha256="0" * 64)
    assert not (tmp_path / "down" / "b.tif").exists() and _no_partial_files(out.parent)

    small = storage.upload_bytes(b'{"a": 1}', f"{s3_bucket}/jobs/a.json", {"seed": "1"})
    head = admin_client().head_object(Bucket=bucket, Key="jobs/a.json", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == _b64sha(b'{"a": 1}')
    assert head["ContentType"] == "application/json"
    assert small["sha256"] == head["Metadata"]["sha256"]

    with pytest.raises(storage.StorageError, match="metadata: key 'Bad Key'"):
        storage.upload_file(tmp_path / "a.tif", uri, metadata={"Bad Key": "x"})
    with pytest.raises(storage.StorageError, match="printable ASCII"):
        storage.upload_file(tmp_path / "a.tif", uri, metadata={"name": "Bäume"})


def test_download_checks_the_sha256_recorded_in_metadata(s3_bucket, tmp_path):
    bucket, _ = _bucket_key(s3_bucket + "/x")
    admin_client().put_object(Bucket=bucket, Key="x", Body=b"real bytes",
                              Metadata={"sha256": hashlib.sha256(b"other").hexdigest()})
    with pytest.raises(storage.IntegrityError, match="the object's metadata sha256"):
        storage.download_file(f"{s3_bucket}/x", tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


def test_multipart_upload_and_ranged_download(s3_bucket, tmp_path, monkeypatch):
    size = 12 * storage.MiB + 12345
    data = _write(tmp_path / "big.bin", size, seed=1)
    uri = f"{s3_bucket}/big.bin"
    started = time.perf_counter()
    result = storage.upload_file(tmp_path / "big.bin", uri, {"seed": "7"},
                                 part_size=5 * storage.MiB)
    assert result["etag"].endswith("-3"), result  # three parts
    bucket, key = _bucket_key(uri)
    head = admin_client().head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ContentLength"] == size and head["ChecksumSHA256"]
    assert head["Metadata"] == {"seed": "7", "sha256": hashlib.sha256(data).hexdigest()}
    assert not admin_client().list_multipart_uploads(Bucket=bucket).get("Uploads")

    monkeypatch.setenv("TEXPROD_S3_PART_SIZE", str(5 * storage.MiB))  # ranged, parallel GETs
    with count_requests("GetObject") as gets:
        storage.download_file(uri, tmp_path / "back.bin")
    assert len(gets) == 3
    assert (tmp_path / "back.bin").read_bytes() == data
    assert time.perf_counter() - started < 20


def test_interrupted_upload_leaves_nothing_at_the_key(s3_bucket, tmp_path):
    uri = f"{s3_bucket}/print.tif"
    bucket, key = _bucket_key(uri)
    storage.upload_bytes(b"the previous version", uri)
    _write(tmp_path / "print.tif", 16 * storage.MiB, seed=2)

    class Interrupted(Exception):
        pass

    sent = []

    def progress(n: int) -> None:  # the connection "dies" after the first part
        sent.append(n)
        if sum(sent) > 5 * storage.MiB:
            raise Interrupted("network down")

    with pytest.raises(Interrupted):
        storage.upload_file(tmp_path / "print.tif", uri, part_size=5 * storage.MiB,
                            progress=progress)
    assert sum(sent) > 5 * storage.MiB  # it really was mid-way
    assert storage.read_bytes(uri) == b"the previous version"  # not replaced, not partial
    assert not admin_client().list_multipart_uploads(Bucket=bucket).get("Uploads")

    with pytest.raises(Interrupted):  # same for a new key: nothing appears at all
        storage.upload_file(tmp_path / "print.tif", f"{s3_bucket}/new.tif",
                            part_size=5 * storage.MiB, progress=progress)
    assert not storage.exists(f"{s3_bucket}/new.tif")
    assert not admin_client().list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_missing_key_and_bucket_errors(s3_bucket, tmp_path):
    uri = f"{s3_bucket}/no/such.tif"
    assert not storage.exists(uri)
    assert storage.head(uri) is None
    with pytest.raises(storage.NoSuchObject, match=f"^{uri}: no such object$"):
        storage.read_bytes(uri)
    with pytest.raises(storage.NoSuchObject, match=f"^{uri}: no such object$"):
        storage.download_file(uri, tmp_path / "x.tif")
    assert list(tmp_path.iterdir()) == []
    missing = f"s3://texprod-missing-{uuid.uuid4().hex[:8]}"
    for call in (storage.exists, storage.read_bytes):
        with pytest.raises(storage.NoSuchBucket, match=f"{missing}: no such bucket"):
            call(f"{missing}/k")
    with pytest.raises(storage.NoSuchBucket, match="no such bucket"):
        storage.upload_bytes(b"x", f"{missing}/k")
    with pytest.raises(storage.NoSuchObject, match="no such file to upload"):
        storage.upload_file(tmp_path / "nothing.tif", uri)


def test_list_exists_delete_presign(s3_bucket, tmp_path):
    for name in ("b/2", "b/1", "a/1", "b2"):
        storage.upload_bytes(name.encode(), f"{s3_bucket}/{name}")
    assert storage.list_keys(f"{s3_bucket}/b/") == [f"{s3_bucket}/b/1", f"{s3_bucket}/b/2"]
    assert storage.list_keys(f"{s3_bucket}/b") == [f"{s3_bucket}/b/1", f"{s3_bucket}/b/2",
                                                   f"{s3_bucket}/b2"]
    assert len(storage.list_keys(s3_bucket)) == 4
    assert storage.exists(f"{s3_bucket}/b/1")
    storage.delete(f"{s3_bucket}/b/1")
    assert not storage.exists(f"{s3_bucket}/b/1")
    storage.delete(f"{s3_bucket}/b/1")  # idempotent

    url = storage.presigned_url(f"{s3_bucket}/b/2", expires_s=600)
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=600" in url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"b/2"
    assert "X-Amz-Expires=604800" in storage.presigned_url(f"{s3_bucket}/b/2")  # 7 days
    with pytest.raises(ConfigError, match="expires_s: got 604801"):
        storage.presigned_url(f"{s3_bucket}/b/2", expires_s=604801)


def _signed_for(url: str, host: str, secret: str = "testing") -> bool:
    """Whether S3 would accept presigned GET `url` sent with `host` as its Host header:
    the SigV4 query signature recomputed from AWS's description of it (canonical request,
    string to sign, derived key), independently of botocore."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    params = dict(query)
    assert params["X-Amz-SignedHeaders"] == "host"  # a browser sends nothing else signed

    def quote(text: str) -> str:
        return urllib.parse.quote(text, safe="-_.~")

    canonical_query = "&".join(f"{quote(k)}={quote(v)}" for k, v in sorted(query)
                               if k != "X-Amz-Signature")
    # S3 takes the path as sent (encoded once); the headers block ends with a newline
    canonical = "\n".join(["GET", parts.path, canonical_query, f"host:{host}\n", "host",
                           "UNSIGNED-PAYLOAD"])
    scope = params["X-Amz-Credential"].split("/", 1)[1]  # date/region/s3/aws4_request
    to_sign = "\n".join(["AWS4-HMAC-SHA256", params["X-Amz-Date"], scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, params["X-Amz-Signature"])


def test_presigned_links_are_signed_for_the_endpoint_browsers_reach(s3_bucket, monkeypatch):
    """Inside the compose stack texprod reaches S3 at http://minio:9000, a name the
    operator's browser cannot resolve: TEXPROD_S3_PUBLIC_URL names the endpoint as browsers
    reach it. Here 127.0.0.1 stands for the internal name and localhost for the public one:
    the same moto server under two hosts."""
    internal = urllib.parse.urlsplit(os.environ["AWS_ENDPOINT_URL"]).netloc  # 127.0.0.1:PORT
    public = internal.replace("127.0.0.1", "localhost")
    uri = f"{s3_bucket}/proofs/box proof.jpg"  # a space: the path is encoded once
    storage.upload_bytes(b"proof", uri)

    plain = storage.presigned_url(uri)
    assert urllib.parse.urlsplit(plain).netloc == internal
    assert _signed_for(plain, internal)  # the checker agrees with botocore's signing
    assert not _signed_for(plain, public)  # rewriting the host would break the signature

    monkeypatch.setenv("TEXPROD_S3_PUBLIC_URL", f"http://{public}/")
    url = storage.presigned_url(uri, expires_s=600)
    assert urllib.parse.urlsplit(url).netloc == public
    assert _signed_for(url, public) and not _signed_for(url, internal)
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"proof"
    storage.upload_bytes(b"still internal", f"{s3_bucket}/after")  # transfers are unchanged
    assert admin_client().get_object(Bucket=s3_bucket[5:], Key="after")["Body"].read() \
        == b"still internal"

    for bad in ("minio:9000", "ftp://localhost:9000", "http://localhost:9000/s3",
                "http://localhost:99999", "http://user@localhost:9000", "https://"):
        monkeypatch.setenv("TEXPROD_S3_PUBLIC_URL", bad)
        with pytest.raises(ConfigError, match=f"TEXPROD_S3_PUBLIC_URL: got '{bad}', must be "
                                              r"http\(s\)://HOST\[:PORT\]"):
            storage.presigned_url(uri)


def test_a_bad_public_url_stops_an_s3_job_before_it_renders(s3_bucket, tmp_path, monkeypatch):
    """The links are signed at the end, for the report: the setting is checked when the job
    is planned, so a typo costs no render and leaves nothing behind."""
    from texprod.job.pipeline import run_job
    from texprod.job.spec import parse_spec

    model = save_generator(random_generator(TINY, 1), tmp_path / "model")
    monkeypatch.setenv("TEXPROD_S3_PUBLIC_URL", "minio:9000")
    spec = parse_spec({"name": "linked", "model": str(model), "seed": 1,
                       "print": {"width_mm": 20, "height_mm": 20, "dpi": 150},
                       "render": {"device": "cpu", "scratch_dir": str(tmp_path / "scratch")},
                       "output": {"dir": f"{s3_bucket}/prints/"}})
    with pytest.raises(ConfigError, match="^TEXPROD_S3_PUBLIC_URL: got 'minio:9000', must be"):
        run_job(spec)
    assert storage.list_keys(s3_bucket) == []
    assert not (tmp_path / "scratch").exists()


def test_local_paths_use_the_same_interface(tmp_path):
    data = _write(tmp_path / "src.bin", 1000)
    result = storage.upload_file(tmp_path / "src.bin", str(tmp_path / "out" / "dst.bin"))
    assert result["etag"] is None and result["sha256"] == hashlib.sha256(data).hexdigest()
    assert storage.exists(str(tmp_path / "out" / "dst.bin"))
    assert storage.read_bytes(str(tmp_path / "out" / "dst.bin")) == data
    storage.download_file(str(tmp_path / "out" / "dst.bin"), tmp_path / "back.bin",
                          expected_sha256=result["sha256"])
    assert (tmp_path / "back.bin").read_bytes() == data
    assert storage.list_keys(str(tmp_path / "out")) == [str(tmp_path / "out" / "dst.bin")]
    storage.delete(str(tmp_path / "out" / "dst.bin"))
    assert not storage.exists(str(tmp_path / "out" / "dst.bin"))


# -- failures: credentials, permissions, endpoint ------------------------------------------


def _iam_user(name: str, allow_s3: bool) -> dict:
    import boto3

    iam = boto3.session.Session().client("iam")
    iam.create_user(UserName=name)
    if allow_s3:
        policy = {"Version": "2012-10-17",
                  "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName=name, PolicyName="s3", PolicyDocument=json.dumps(policy))
    return iam.create_access_key(UserName=name)["AccessKey"]


def test_rejected_credentials_and_access_denied(s3_server, s3_bucket, monkeypatch):
    """moto checks signatures and IAM policies once its auth is switched on
    (/moto-api/reset-auth): these are the server's real rejections, not mocks."""
    uri = f"{s3_bucket}/secret.tif"
    storage.upload_bytes(b"pixels", uri)
    suffix = uuid.uuid4().hex[:8]
    writer = _iam_user(f"writer-{suffix}", allow_s3=True)
    nobody = _iam_user(f"nobody-{suffix}", allow_s3=False)
    moto_auth(s3_server, True)
    try:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", writer["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", writer["SecretAccessKey"])
        assert storage.read_bytes(uri) == b"pixels"  # valid credentials still work

        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        for call in (storage.read_bytes, storage.exists):
            with pytest.raises(storage.CredentialsError,
                               match=f"S3 credentials rejected for {uri}: SignatureDoesNotMatch"):
                call(uri)

        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        with pytest.raises(storage.CredentialsError,
                           match=f"S3 credentials rejected for {uri}: InvalidAccessKeyId"):
            storage.read_bytes(uri)
        with pytest.raises(storage.CredentialsError, match="InvalidAccessKeyId"):
            storage.upload_bytes(b"x", uri)

        monkeypatch.setenv("AWS_ACCESS_KEY_ID", nobody["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", nobody["SecretAccessKey"])
        with pytest.raises(storage.AccessDenied, match=f"access denied to {uri}"):
            storage.read_bytes(uri)
    finally:
        moto_auth(s3_server, False)


def test_missing_credentials(s3_server, monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    with pytest.raises(storage.CredentialsError, match="no usable S3 credentials for s3://"):
        storage.read_bytes("s3://some-bucket/k")


def test_unreachable_endpoint_fails_fast_after_bounded_retries(s3_server, monkeypatch, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections are refused
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("TEXPROD_S3_MAX_ATTEMPTS", "3")
    started = time.perf_counter()
    with count_requests("GetObject") as attempts:
        client = storage.s3_client()
        sends = []
        client.meta.events.register("before-send.s3", lambda **kw: sends.append(1))
        with pytest.raises(storage.EndpointUnreachable,
                           match=f"cannot reach the S3 endpoint {endpoint} to read "
                                 r"s3://b-u-c/k \(tried 3 times\)"):
            storage.read_bytes("s3://b-u-c/k")
    assert len(attempts) == 1 and len(sends) == 3  # one call, three attempts
    _write(tmp_path / "x.bin", 10)
    with pytest.raises(storage.EndpointUnreachable, match="cannot reach the S3 endpoint"):
        storage.upload_file(tmp_path / "x.bin", "s3://b-u-c/x.bin")
    assert time.perf_counter() - started < 15


# -- model cache ---------------------------------------------------------------------------


def _push_checkpoint(tmp_path: Path, uri: str, seed: int = 0) -> Path:
    ckpt = save_generator(random_generator(TINY, seed), tmp_path / f"ckpt-{seed}",
                          name="tiny", overwrite=True)
    for name in ("generator.safetensors", "model.json"):
        storage.upload_file(ckpt / name, f"{uri}/{name}")
    return ckpt


def test_model_cache_fetches_once_verifies_and_refetches(s3_bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("TEXPROD_CACHE", str(tmp_path / "cache"))
    uri = f"{s3_bucket}/checkpoints/tiny"
    ckpt = _push_checkpoint(tmp_path, uri)

    with count_requests("GetObject") as gets:
        path = fetch_model(uri)
    assert len(gets) == 2  # model.json and the weights
    assert path.parent == tmp_path / "cache" / "models"
    loaded = load_checkpoint(path)
    assert loaded.card["weights"]["sha256"] == load_checkpoint(ckpt).card["weights"]["sha256"]
    source = json.loads((path / "source.json").read_text())
    bucket, key = _bucket_key(f"{uri}/model.json")
    assert source["uri"] == uri
    assert source["etags"]["model.json"] == \
        admin_client().head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    weights = path / "generator.safetensors"
    mtime = weights.stat().st_mtime_ns

    with count_requests("GetObject") as gets:  # unchanged remote: two HEADs, no GET
        assert fetch_model(uri + "/") == path
        assert fetch_model(f"{uri}/model.json") == path
    assert gets == [] and weights.stat().st_mtime_ns == mtime

    with open(weights, "r+b") as f:  # corrupt the cache entry
        f.truncate(weights.stat().st_size // 2)
    with count_requests("GetObject") as gets:
        assert fetch_model(uri) == path
    assert len(gets) == 2
    load_checkpoint(path)

    with open(weights, "r+b") as f:  # same size, one byte flipped
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert fetch_model(uri) == path
    load_checkpoint(path)

    _push_checkpoint(tmp_path, uri, seed=1)  # the remote changes: a new entry
    new_path = fetch_model(uri)
    assert new_path != path
    assert load_checkpoint(new_path).card["weights"]["sha256"] != \
        loaded.card["weights"]["sha256"]
    assert [p.name for p in (tmp_path / "cache" / "models").iterdir()
            if p.name.startswith(".")] == []


def test_model_cache_errors(s3_bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("TEXPROD_CACHE", str(tmp_path / "cache"))
    with pytest.raises(storage.NoSuchObject, match="is s3://.*/nothing a checkpoint directory"):
        fetch_model(f"{s3_bucket}/nothing")

    uri = f"{s3_bucket}/mismatch"
    ckpt = _push_checkpoint(tmp_path, uri)
    other = save_generator(random_generator(TINY, 5), tmp_path / "other", name="other")
    storage.upload_file(other / "generator.safetensors", f"{uri}/generator.safetensors")
    with pytest.raises(storage.IntegrityError, match="do not match .*model.json"):
        fetch_model(uri)
    models = tmp_path / "cache" / "models"
    assert not [p for p in models.iterdir() if p.name != "by-uri"]  # nothing half-made

    storage.upload_bytes(b'{"format": "texprod-generator", "format_version": 1, "config": {}, '
                         b'"weights": {}}', f"{uri}/model.json")
    with pytest.raises(CheckpointError, match="weights.sha256 is needed to cache the model"):
        fetch_model(uri)
    card = json.loads((ckpt / "model.json").read_text())
    card["weights"]["file"] = "../../escape"
    storage.upload_bytes(json.dumps(card).encode(), f"{uri}/model.json")
    with pytest.raises(CheckpointError, match="weights.file: got '../../escape'"):
        fetch_model(uri)


def test_resolve_model_s3_uri(s3_bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("TEXPROD_CACHE", str(tmp_path / "cache"))
    uri = f"{s3_bucket}/checkpoints/tiny"
    _push_checkpoint(tmp_path, uri)
    path = references.resolve_model(uri)
    assert path.is_relative_to(tmp_path / "cache")
    load_checkpoint(path)
    with pytest.raises(ConfigError, match="supported: a checkpoint path"):
        references.resolve_model("https://example.com/model")
    assert os.environ["TEXPROD_CACHE"] == str(tmp_path / "cache")
