"""Support for the black-box suite: a real server process on a free loopback port.

Target selection (environment):
  KELVIN_TEST_TARGET=kelvin (default)  start KELVIN_SERVER_BIN
                                       (default: <repo>/target/release/kelvin-server)
  KELVIN_TEST_TARGET=redis             start `redis-server` (REDIS_SERVER_BIN overrides)

Running the suite against real Redis is how the tests themselves are validated: every
test must pass there. Each server gets its own temporary directory and is killed at the
end of the session (or of the module, for the special-purpose servers).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

REPO_ROOT = Path(__file__).resolve().parents[2]
TARGET = os.environ.get("KELVIN_TEST_TARGET", "kelvin").strip().lower()
if TARGET not in ("kelvin", "redis"):
    raise RuntimeError(f"KELVIN_TEST_TARGET must be 'kelvin' or 'redis', not {TARGET!r}")

HOST = "127.0.0.1"
# Every socket the suite opens has a timeout: nothing waits forever.
SOCKET_TIMEOUT = 10.0
STARTUP_TIMEOUT = 20.0


def _die_with_parent() -> None:
    """Runs in the child before exec: ask Linux to SIGKILL the server if the test process
    dies (even by SIGKILL), so that no server outlives the run."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except OSError:
        pass


_RUNNING: "set[ServerProcess]" = set()


@atexit.register
def _stop_all() -> None:
    for srv in list(_RUNNING):
        srv.stop()


def kelvin_bin() -> str:
    path = os.environ.get("KELVIN_SERVER_BIN") or str(REPO_ROOT / "target/release/kelvin-server")
    if not os.path.isabs(path):
        path = str(REPO_ROOT / path)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------
# A minimal RESP client over a raw socket: for exact-bytes checks and protocol abuse.
# ---------------------------------------------------------------------------------------


class RespError(str):
    """An error reply (`-ERR ...`), returned (not raised) by RawConn.read_reply."""


class RawConn:
    def __init__(self, port: int, timeout: float = 5.0):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> "RawConn":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def encode(*args) -> bytes:
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, str):
                a = a.encode()
            elif isinstance(a, (int, float)):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, *args) -> None:
        self.sock.sendall(self.encode(*args))

    def call(self, *args):
        self.send(*args)
        return self.read_reply()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed by server")
        self.buf += data

    def read_exact(self, n: int) -> bytes:
        deadline = time.monotonic() + SOCKET_TIMEOUT
        while len(self.buf) < n:
            if time.monotonic() > deadline:
                raise TimeoutError("read_exact timed out")
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_line(self) -> bytes:
        deadline = time.monotonic() + SOCKET_TIMEOUT
        while b"\r\n" not in self.buf:
            if time.monotonic() > deadline:
                raise TimeoutError("read_line timed out")
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_reply(self):
        """Parses one RESP2/RESP3 reply. Bulk strings come back as str (utf-8) when they
        decode, else bytes; maps as dict; errors as RespError; doubles as float."""
        line = self.read_line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind in (b"$", b"="):
            n = int(rest)
            if n < 0:
                return None
            data = self.read_exact(n + 2)[:-2]
            try:
                return data.decode()
            except UnicodeDecodeError:
                return data
        if kind in (b"*", b"~", b">"):
            n = int(rest)
            if n < 0:
                return None
            return [self.read_reply() for _ in range(n)]
        if kind == b"%":
            n = int(rest)
            out = {}
            for _ in range(n):
                k = self.read_reply()
                out[k if not isinstance(k, list) else tuple(k)] = self.read_reply()
            return out
        if kind == b"_":
            return None
        if kind == b",":
            return float(rest)
        if kind == b"#":
            return rest == b"t"
        if kind == b"(":
            return int(rest)
        if kind == b"|":  # attribute: skip it, return the reply it decorates
            n = int(rest)
            for _ in range(2 * n):
                self.read_reply()
            return self.read_reply()
        raise AssertionError(f"unexpected RESP line {line!r}")

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """True if the server closes the connection within `timeout` (pending bytes are
        discarded)."""
        deadline = time.monotonic() + timeout
        self.sock.settimeout(0.2)
        try:
            while time.monotonic() < deadline:
                try:
                    data = self.sock.recv(65536)
                except socket.timeout:
                    continue
                except (ConnectionResetError, BrokenPipeError):
                    return True
                if not data:
                    return True
            return False
        finally:
            self.sock.settimeout(SOCKET_TIMEOUT)


# ---------------------------------------------------------------------------------------
# Server processes.
# ---------------------------------------------------------------------------------------


class ServerProcess:
    """One server on a free port. `options` are flag-style settings common to both
    targets: requirepass, maxclients."""

    def __init__(self, **options):
        self.options = options
        self.port = 0
        self.dir = tempfile.mkdtemp(prefix=f"kelvin-pytest-{TARGET}-")
        self.log_path = os.path.join(self.dir, "server.log")
        self.proc: subprocess.Popen | None = None
        self._log = None

    def command(self) -> list[str]:
        opts = []
        for name, value in self.options.items():
            opts += [f"--{name.replace('_', '-')}", str(value)]
        if TARGET == "redis":
            binary = os.environ.get("REDIS_SERVER_BIN") or shutil.which("redis-server")
            if not binary:
                raise RuntimeError("redis-server not found (KELVIN_TEST_TARGET=redis)")
            return [binary, "--port", str(self.port), "--bind", HOST, "--save", "",
                    "--appendonly", "no", "--dir", self.dir, "--daemonize", "no", *opts]
        binary = kelvin_bin()
        if not os.path.exists(binary):
            raise RuntimeError(
                f"{binary} does not exist: run `cargo build --release -p kelvin-server` "
                "or set KELVIN_SERVER_BIN")
        return [binary, "--bind", HOST, "--port", str(self.port),
                "--data-dir", os.path.join(self.dir, "data"), *opts]

    def start(self, keep_port: bool = False) -> "ServerProcess":
        """Starts on a free port, or on the same port as before with `keep_port` (a
        cluster member's address is in its peers' cluster.conf)."""
        last_error = ""
        for _attempt in range(5):  # a free port can be taken between probe and bind
            if not (keep_port and self.port):
                self.port = free_port()
            self._log = open(self.log_path, "ab")
            env = dict(os.environ)
            env.setdefault("RUST_LOG", "warn")
            self.proc = subprocess.Popen(self.command(), stdout=self._log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, preexec_fn=_die_with_parent)
            _RUNNING.add(self)
            if self._wait_ready():
                return self
            last_error = self.log_tail()
            self.stop()
        raise RuntimeError(f"server did not start ({TARGET}); log tail:\n{last_error}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with RawConn(self.port, timeout=1.0) as c:
                    reply = c.call("PING")
                    # PONG, or NOAUTH on a password-protected server: either way it is up.
                    if reply == "PONG" or isinstance(reply, RespError):
                        return True
            except (OSError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
        _RUNNING.discard(self)
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self, **kwargs) -> redis.Redis:
        kwargs.setdefault("decode_responses", True)
        kwargs.setdefault("socket_timeout", SOCKET_TIMEOUT)
        kwargs.setdefault("socket_connect_timeout", SOCKET_TIMEOUT)
        kwargs.setdefault("protocol", 2)
        # no silent retries: a failure shows up as the failure it is, at once
        kwargs.setdefault("retry", Retry(NoBackoff(), 0))
        return redis.Redis(host=HOST, port=self.port, **kwargs)

    def raw(self, timeout: float = 5.0) -> RawConn:
        return RawConn(self.port, timeout=timeout)


@contextlib.contextmanager
def running_server(**options):
    srv = ServerProcess(**options).start()
    try:
        yield srv
    finally:
        srv.cleanup()


@contextlib.contextmanager
def notify_events(client: redis.Redis, flags: str):
    """Sets notify-keyspace-events for the duration of a block, then turns it off."""
    client.config_set("notify-keyspace-events", flags)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            client.config_set("notify-keyspace-events", "")


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.02):
    """Polls `predicate` until it returns a truthy value or `timeout` passes; returns the
    last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def next_message(pubsub: redis.client.PubSub, timeout: float = 5.0, kinds=("message", "pmessage")):
    """The next pub/sub message of one of `kinds` within `timeout`, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = pubsub.get_message(timeout=max(0.01, min(0.2, deadline - time.monotonic())))
        if msg is not None and msg["type"] in kinds:
            return msg
    return None


def wait_subscribed(pubsub: redis.client.PubSub, count: int, timeout: float = 5.0) -> None:
    """Consumes subscribe/psubscribe confirmations until `count` have been seen."""
    seen = 0
    deadline = time.monotonic() + timeout
    while seen < count and time.monotonic() < deadline:
        msg = pubsub.get_message(timeout=0.2)
        if msg is not None and msg["type"] in ("subscribe", "psubscribe"):
            seen += 1
    assert seen == count, f"only {seen}/{count} subscription confirmations"
