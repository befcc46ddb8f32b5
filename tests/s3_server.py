"""A real S3 server on loopback for tests: moto's standalone server, over HTTP.

`s3_server` (session): starts the server on a free 127.0.0.1 port, points the AWS
environment at it (endpoint, test credentials, region; config files disabled) and restores
the environment afterwards; TEXPROD_CACHE points into the session's temporary directory.
Yields the endpoint URL.

`s3_bucket` (function): a fresh, empty bucket; returns ``s3://<bucket>``.

Helpers: `admin_client()` (a plain boto3 client, independent of texprod.storage) and
`moto_auth(endpoint, enabled)` (switches moto's IAM authentication on or off: with it on,
only IAM access keys created on the server are accepted and signatures are checked).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
CLEARED_ENV = ("TEXPROD_CACHE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3",
               "TEXPROD_S3_MAX_ATTEMPTS", "TEXPROD_REGISTRY")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_server: dict[str, str] = {}


@functools.cache
def _admin_client(endpoint: str):
    import boto3
    from botocore.config import Config

    return boto3.session.Session(
        aws_access_key_id=TEST_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=TEST_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=TEST_ENV["AWS_DEFAULT_REGION"],
    ).client("s3", endpoint_url=endpoint, config=Config(
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"}))


def admin_client():
    """A boto3 S3 client for setting up and inspecting the server, independent of
    texprod.storage and of credentials a test puts in the environment."""
    return _admin_client(_server["endpoint"])


def moto_auth(endpoint: str, enabled: bool) -> None:
    """Turn moto's authentication on (every request must be signed by an IAM access key
    known to the server, and be allowed by its policies) or off (anything goes)."""
    body = b"0" if enabled else b"inf"
    # not form-encoded (urllib's default), or Flask swallows the body
    request = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=body,
                                     method="POST", headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(request, timeout=10) as response:
        json.load(response)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    from texprod import storage

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    _server["endpoint"] = endpoint
    saved = {k: os.environ.get(k) for k in (*TEST_ENV, *CLEARED_ENV, "AWS_ENDPOINT_URL")}
    os.environ.update(TEST_ENV, AWS_ENDPOINT_URL=endpoint,
                      TEXPROD_CACHE=str(tmp_path_factory.mktemp("texprod-cache")))
    for key in CLEARED_ENV:
        os.environ.pop(key, None)
    storage.clear_client_cache()
    try:
        yield endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        storage.clear_client_cache()
        _server.pop("endpoint", None)
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: str) -> str:
    name = f"texprod-test-{uuid.uuid4().hex[:12]}"
    admin_client().create_bucket(Bucket=name)
    return f"s3://{name}"
