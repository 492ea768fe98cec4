"""The S3 writer lease speaks the provenance vocabulary (`hostname`, issue 30.4) and still reads a lease written
under the older name (`host`): a live lease of an older writer must keep its store, a dead one must free it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("google_crc32c")

from embedstore.base.errors import StoreError  # noqa: E402
from embedstore.base.provenance import hostname  # noqa: E402
from embedstore.store.object_backend import _expired, _Lease, _parse_lease  # noqa: E402


class HeldLease:
    """Objects whose `writer.lease` another writer holds: every create and replace of it fails."""

    def __init__(self, body: dict) -> None:
        self.body, self.url = json.dumps(body).encode(), "s3://bucket/store"

    def create(self, name: str, data: bytes) -> bool:
        return False

    def etag(self, name: str) -> str:
        return "etag-1"

    def read(self, name: str) -> bytes:
        return self.body

    def replace(self, name: str, data: bytes, etag: str) -> bool:
        return False


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_lease_is_written_under_the_provenance_name():
    body = json.loads(_Lease(HeldLease({}), "token")._body())
    assert body["hostname"] == hostname() and "host" not in body
    assert set(body) == {"owner", "hostname", "pid", "expires"}


@pytest.mark.parametrize("name", ["hostname", "host"])
def test_a_lease_of_either_format_names_its_holder_and_frees_a_dead_one(name):
    later = time.time() + 60
    live = {"owner": "other", name: hostname(), "pid": os.getpid(), "expires": later}
    assert _parse_lease(json.dumps(live).encode())["hostname"] == hostname()
    assert not _expired(_parse_lease(json.dumps(live).encode()))  # a live writer of this host keeps its lease
    with pytest.raises(StoreError, match=f"another writer \\({hostname()} pid {os.getpid()}\\) holds"):
        _Lease(HeldLease(live), "mine").acquire()
    dead = {**live, "pid": _dead_pid()}
    assert _expired(_parse_lease(json.dumps(dead).encode()))  # killed on this host: free at once
    elsewhere = {**dead, name: hostname() + "-another-host"}
    assert not _expired(_parse_lease(json.dumps(elsewhere).encode()))  # another host's pid says nothing here
