"""A password-protected server (--requirepass secret) and a server with --maxclients 2."""

import select
import time

import pytest
import redis

from support import RawConn, RespError, running_server

NOAUTH = "NOAUTH Authentication required."
WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled."


@pytest.fixture(scope="module")
def auth_server():
    with running_server(requirepass="secret") as srv:
        yield srv


@pytest.fixture
def araw(auth_server):
    conns = []

    def make():
        c = auth_server.raw()
        conns.append(c)
        return c

    try:
        yield make
    finally:
        for c in conns:
            c.close()


@pytest.mark.auth
def test_noauth_before_auth(araw):
    c = araw()
    assert c.call("GET", "a") == NOAUTH
    assert c.call("SET", "a", "b") == NOAUTH
    assert c.call("AUTH", "secret") == "OK"
    assert c.call("SET", "a", "b") == "OK"
    assert c.call("GET", "a") == "b"


@pytest.mark.auth
def test_wrong_password(araw):
    c = araw()
    assert c.call("AUTH", "nope") == WRONGPASS
    assert c.call("AUTH", "default", "nope") == WRONGPASS
    assert c.call("GET", "a") == NOAUTH  # still not authenticated
    assert c.call("AUTH", "secret") == "OK"


@pytest.mark.auth
def test_auth_two_args(araw):
    c = araw()
    assert c.call("AUTH", "default", "secret") == "OK"
    assert c.call("PING") == "PONG"
    c2 = araw()
    assert c2.call("AUTH", "someoneelse", "secret") == WRONGPASS


@pytest.mark.auth
def test_auth_arity(araw):
    c = araw()
    err = c.call("AUTH")
    assert isinstance(err, RespError) and "wrong number of arguments for 'auth'" in err


@pytest.mark.auth
def test_hello_3_auth(araw):
    c = araw()
    reply = c.call("HELLO", "3", "AUTH", "default", "secret")
    assert isinstance(reply, dict) and reply["proto"] == 3
    assert c.call("SET", "h3", "v") == "OK"
    c2 = araw()
    err = c2.call("HELLO", "3", "AUTH", "default", "wrong")
    assert err == WRONGPASS
    assert c2.call("GET", "x") == NOAUTH


@pytest.mark.auth
def test_redis_py_password(auth_server):
    good = auth_server.client(password="secret")
    try:
        assert good.ping() == True
        assert good.set("auth:k", "v") == True
    finally:
        good.close()
    resp3 = auth_server.client(password="secret", protocol=3)
    try:
        assert resp3.get("auth:k") == "v"
    finally:
        resp3.close()
    bad = auth_server.client(password="wrong")
    try:
        with pytest.raises(redis.AuthenticationError):
            bad.ping()
    finally:
        bad.close()
    none = auth_server.client()
    try:
        with pytest.raises(redis.AuthenticationError):
            none.get("auth:k")
    finally:
        none.close()


# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server():
    with running_server(maxclients=2) as srv:
        yield srv


def _connect_and_ping(port):
    """A connection that answered PING, or None."""
    c = RawConn(port)
    try:
        if c.call("PING") == "PONG":
            return c
    except (ConnectionError, OSError, TimeoutError):
        pass
    c.close()
    return None


def _connect_with_retry(port, timeout=5.0):
    # a closed client is released asynchronously: retry for a bounded time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = _connect_and_ping(port)
        if c is not None:
            return c
        time.sleep(0.05)
    return None


@pytest.mark.maxclients
def test_third_connection_refused(small_server):
    conns = []
    try:
        first = _connect_with_retry(small_server.port)
        assert first is not None
        conns.append(first)
        second = RawConn(small_server.port)
        conns.append(second)
        assert second.call("PING") == "PONG"
        third = RawConn(small_server.port)
        conns.append(third)
        # the server answers at accept time, before any request: send nothing, so no
        # reset can race the error line
        assert third.read_line() == b"-ERR max number of clients reached"
        assert third.wait_closed(5.0)
        # the two accepted clients are unaffected
        assert first.call("PING") == "PONG"
        assert second.call("PING") == "PONG"
        # after one leaves, a new client gets in
        second.close()
        again = _connect_with_retry(small_server.port)
        assert again is not None
        conns.append(again)
    finally:
        for c in conns:
            c.close()


@pytest.mark.maxclients
def test_redis_py_sees_max_clients_error(small_server):
    held = [_connect_with_retry(small_server.port), _connect_with_retry(small_server.port)]
    try:
        assert None not in held
        # The server writes the error at accept time and closes. A client that sends a
        # command first races that close (its write may meet the reset: "Broken pipe",
        # against redis-server too), so this connection sends nothing on connect (no
        # CLIENT SETINFO, RESP2) and reads once the error line is there: what is checked
        # is that redis-py turns exactly that line into its ConnectionError.
        conn = redis.Connection(
            host="127.0.0.1",
            port=small_server.port,
            protocol=2,
            lib_name=None,
            lib_version=None,
            socket_timeout=5.0,
            socket_connect_timeout=5.0,
        )
        try:
            conn.connect()
            readable, _, _ = select.select([conn._sock], [], [], 5.0)
            assert readable, "the server sent nothing to a client over the limit"
            with pytest.raises(redis.ConnectionError, match="max number of clients reached"):
                conn.read_response()
        finally:
            conn.disconnect()
    finally:
        for h in held:
            if h is not None:
                h.close()
