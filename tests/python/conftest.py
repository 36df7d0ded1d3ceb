"""Fixtures for the black-box suite; see support.py for the target selection
(KELVIN_TEST_TARGET=kelvin|redis) and the server processes."""

from __future__ import annotations

import contextlib
import os
import signal
import sys

import pytest
import redis

from support import TARGET, RawConn, ServerProcess, running_server


# A hard cap per test (setup + call + teardown), so that a server that stops answering
# fails the test instead of hanging the run. pytest-timeout is not needed for this.
TEST_TIMEOUT = int(os.environ.get("KELVIN_TEST_TIMEOUT", "60"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    def on_alarm(signum, frame):
        raise TimeoutError(f"{item.nodeid} took more than {TEST_TIMEOUT}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _hide_redis_py_frames() -> None:
    """Leaves redis-py's own frames out of failure tracebacks (pytest skips frames whose
    globals set __tracebackhide__): they say nothing about the server, and rendering them
    costs ~0.1 s each, as pytest parses each frame's (large) module."""
    for name, module in list(sys.modules.items()):
        if module is not None and (name == "redis" or name.startswith("redis.")):
            with contextlib.suppress(Exception):
                module.__dict__.setdefault("__tracebackhide__", True)


_hide_redis_py_frames()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item, call):
    if call.excinfo is not None:
        _hide_redis_py_frames()  # modules redis-py imported lazily since


@pytest.fixture(scope="session")
def target() -> str:
    return TARGET


@pytest.fixture(scope="session")
def _shared_server():
    with running_server() as srv:
        yield srv


@pytest.fixture
def server(_shared_server):
    """The shared server (db 0 of it is what `r` talks to). If an earlier test crashed it,
    it is started again so one crash does not fail every later test; the test during
    which it died fails in its teardown (see below)."""
    if not _shared_server.alive():
        _shared_server.restart()
    yield _shared_server
    assert _shared_server.alive(), (
        f"the server died during this test; log tail:\n{_shared_server.log_tail()}")


def _best_effort_flushall(srv: ServerProcess) -> None:
    """Empties every database before a test. FLUSHALL may not exist yet on a server under
    construction: then the tests rely on their own distinct key names."""
    with contextlib.suppress(Exception), srv.raw() as c:
        c.call("FLUSHALL")


@pytest.fixture
def r(server):
    """A client on db 0 of the shared server, decode_responses=True, RESP2."""
    assert server.alive(), f"server died earlier; log tail:\n{server.log_tail()}"
    _best_effort_flushall(server)
    client = server.client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def rb(r, server):
    """A client of db 0 that answers bytes (after `r` emptied the server): for values
    that are not UTF-8 (bitmaps, DUMP payloads)."""
    client = server.client(decode_responses=False)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def r2(server):
    """A second, independent client of the shared server."""
    client = server.client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def single(server):
    """A client bound to one connection (for MULTI/SELECT/CLIENT state)."""
    client = server.client(single_connection_client=True)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def raw(server):
    conns: list[RawConn] = []

    def make(timeout: float = 5.0) -> RawConn:
        c = server.raw(timeout=timeout)
        conns.append(c)
        return c

    try:
        yield make
    finally:
        for c in conns:
            c.close()
