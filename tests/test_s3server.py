"""The test S3 server (SeaweedFS) behaves like S3 for what the store relies on, seen through s3fs."""

from __future__ import annotations

import os

import pytest

s3fs = pytest.importorskip("s3fs")


def _fs(server, **kw):
    # A private instance (no fsspec instance cache), so listings cached by other tests can't leak in.
    return s3fs.S3FileSystem(
        endpoint_url=server.endpoint_url,
        key=server.access_key,
        secret=server.secret_key,
        skip_instance_cache=True,
        **kw,
    )


def test_put_get_list_overwrite_delete(s3_server, s3_bucket):
    fs = _fs(s3_server)
    b = s3_bucket
    assert fs.ls(b) == []

    payload = bytes(range(256)) * 41  # binary, not a multiple of any block size
    fs.pipe(f"{b}/run/part-0.bin", payload)
    fs.pipe(f"{b}/run/part-1.bin", b"second")
    fs.pipe(f"{b}/run/sub/deep.txt", b"deep")
    assert fs.cat(f"{b}/run/part-0.bin") == payload
    assert fs.info(f"{b}/run/part-0.bin")["size"] == len(payload)

    assert sorted(fs.ls(f"{b}/run", detail=False)) == [f"{b}/run/part-0.bin", f"{b}/run/part-1.bin", f"{b}/run/sub"]
    assert fs.find(b) == [f"{b}/run/part-0.bin", f"{b}/run/part-1.bin", f"{b}/run/sub/deep.txt"]
    assert fs.find(f"{b}/run/sub") == [f"{b}/run/sub/deep.txt"]

    # Overwrite: the new bytes replace the old ones.
    fs.pipe(f"{b}/run/part-1.bin", b"replaced, longer than before")
    assert fs.cat(f"{b}/run/part-1.bin") == b"replaced, longer than before"

    assert not fs.exists(f"{b}/run/missing.bin")
    assert not fs.exists(f"{b}/nowhere/missing.bin")
    with pytest.raises(FileNotFoundError):
        fs.cat(f"{b}/run/missing.bin")

    fs.rm(f"{b}/run/part-0.bin")
    assert not fs.exists(f"{b}/run/part-0.bin")
    assert fs.find(b) == [f"{b}/run/part-1.bin", f"{b}/run/sub/deep.txt"]


def test_marker_written_last_is_seen_by_another_client(s3_server, s3_bucket):
    """A completion marker written by one client is visible, with its bytes, to another that listed before."""
    writer, reader = _fs(s3_server), _fs(s3_server)
    b = s3_bucket
    writer.pipe(f"{b}/snap/data.bin", b"data")
    assert reader.ls(f"{b}/snap", detail=False) == [f"{b}/snap/data.bin"]  # the reader caches this listing

    writer.pipe(f"{b}/snap/_COMPLETE", b"done")
    # fsspec's listing cache is per instance: a stale listing until invalidated...
    assert reader.ls(f"{b}/snap", detail=False) == [f"{b}/snap/data.bin"]
    reader.invalidate_cache()
    assert reader.ls(f"{b}/snap", detail=False) == [f"{b}/snap/_COMPLETE", f"{b}/snap/data.bin"]
    # ...while reads and exists() of a key go to the server.
    assert reader.cat(f"{b}/snap/_COMPLETE") == b"done"


def test_deleted_objects_leave_an_empty_prefix(s3_server, s3_bucket):
    """SeaweedFS quirk (unlike AWS S3): deleting the last object under a prefix keeps the prefix listed."""
    fs = _fs(s3_server)
    b = s3_bucket
    fs.pipe(f"{b}/tmp/x.bin", b"x")
    fs.rm(f"{b}/tmp/x.bin")
    fs.invalidate_cache()
    assert fs.find(b) == []  # objects: none
    assert fs.ls(b, detail=False) in ([], [f"{b}/tmp"])  # SeaweedFS 4.48 still lists "tmp/" here


def test_bad_credentials_are_refused(s3_server, s3_bucket):
    bad = s3fs.S3FileSystem(
        endpoint_url=s3_server.endpoint_url, key=s3_server.access_key, secret="wrong", skip_instance_cache=True
    )
    with pytest.raises(PermissionError):
        bad.ls(s3_bucket)


def test_env_fixture_configures_clients(s3_env, s3_bucket):
    assert os.environ["AWS_ACCESS_KEY_ID"] == s3_env.access_key
    fs = s3fs.S3FileSystem(skip_instance_cache=True)  # credentials, region and endpoint from the environment
    fs.pipe(f"{s3_bucket}/env.txt", b"from env")
    assert fs.cat(f"{s3_bucket}/env.txt") == b"from env"


def test_two_servers_side_by_side(s3_server):
    from tests.s3server import S3Server

    with S3Server(access_key="other", secret_key="other-secret-key") as other:
        assert other.endpoint_url != s3_server.endpoint_url
        bucket = other.create_bucket()
        fs = _fs(other)
        fs.pipe(f"{bucket}/k", b"v")
        assert fs.cat(f"{bucket}/k") == b"v"
        proc = other.proc
    assert proc.poll() is not None  # stopped
