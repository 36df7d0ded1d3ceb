"""PHP sessions through phpredis with session locking on, as a PHP application uses them:
`session.save_handler=redis`, `redis.session.locking_enabled=1`. phpredis takes the lock
with SET NX EX and releases it with a Lua script (EVALSHA, EVAL after NOSCRIPT); a server
without Lua makes it warn "Failed to release session lock" and leaves the lock behind.

Needs Debian's php-cli and php-redis (scripts/test installs them); skipped without them."""

import json
import shutil
import subprocess
import uuid

import pytest

from support import HOST

pytestmark = pytest.mark.scripting

# Each run is bounded: the PHP process is killed past this.
PHP_TIMEOUT = 30

# One request: start the session (taking the lock), count a visit, hold the lock for
# argv[2] microseconds, write and close (releasing the lock). Prints what it saw.
REQUEST = r"""<?php
session_id($argv[1]);
if (!session_start()) { fwrite(STDERR, "session_start failed\n"); exit(2); }
$seen = $_SESSION['visits'] ?? 0;
usleep((int)$argv[2]);
$_SESSION['visits'] = $seen + 1;
$_SESSION['who'][] = $argv[3];
if (!session_write_close()) { fwrite(STDERR, "session_write_close failed\n"); exit(3); }
echo json_encode(['seen' => $seen]), "\n";
"""


def _php_has_redis() -> bool:
    if shutil.which("php") is None:
        return False
    out = subprocess.run(["php", "-m"], capture_output=True, text=True, timeout=PHP_TIMEOUT)
    return "redis" in out.stdout.split()


requires_php = pytest.mark.skipif(
    not _php_has_redis(), reason="php-cli with the redis extension (php-redis) not installed")


@pytest.fixture
def request_script(tmp_path):
    path = tmp_path / "request.php"
    path.write_text(REQUEST)
    return path


def _php(server, script, session: str, hold_us: int, who: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            "php",
            "-d", "display_errors=stderr",
            "-d", "error_reporting=E_ALL",
            "-d", "session.save_handler=redis",
            "-d", f"session.save_path=tcp://{HOST}:{server.port}",
            "-d", "session.use_cookies=0",
            "-d", "session.use_strict_mode=0",
            "-d", "redis.session.locking_enabled=1",
            "-d", "redis.session.lock_expire=20",
            # Wait up to 2000 * 10 ms for a lock another request holds.
            "-d", "redis.session.lock_retries=2000",
            "-d", "redis.session.lock_wait_time=10000",
            str(script), session, str(hold_us), who,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> dict:
    try:
        out, err = proc.communicate(timeout=PHP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"php did not finish in {PHP_TIMEOUT}s; stderr: {err}")
    assert proc.returncode == 0, f"php exited {proc.returncode}; stdout: {out} stderr: {err}"
    # Any warning (notably "Failed to release session lock") fails the test.
    assert "Warning" not in err and "Failed" not in err, err
    assert "Warning" not in out and "Failed" not in out, out
    return json.loads(out.strip().splitlines()[-1])


@requires_php
def test_session_is_saved_and_its_lock_released(r, server, request_script):
    session = "kelvin" + uuid.uuid4().hex
    assert _finish(_php(server, request_script, session, 0, "first")) == {"seen": 0}
    data = r.get(f"PHPREDIS_SESSION:{session}")
    assert data is not None and "visits|i:1;" in data, data
    assert r.exists(f"PHPREDIS_SESSION:{session}_LOCK") == 0
    # The TTL is the session lifetime (session.gc_maxlifetime, 1440 s by default).
    assert 0 < r.ttl(f"PHPREDIS_SESSION:{session}") <= 1440
    # A second request reads what the first wrote, and releases its lock too.
    assert _finish(_php(server, request_script, session, 0, "second")) == {"seen": 1}
    assert "visits|i:2;" in r.get(f"PHPREDIS_SESSION:{session}")
    assert r.exists(f"PHPREDIS_SESSION:{session}_LOCK") == 0


@requires_php
def test_concurrent_requests_on_one_session_serialize(r, server, request_script):
    session = "kelvin" + uuid.uuid4().hex
    # Both read the visit count while holding the lock for a while: without the lock
    # both would see 0 and the count would end at 1.
    first = _php(server, request_script, session, 300_000, "a")
    second = _php(server, request_script, session, 300_000, "b")
    seen = sorted([_finish(first)["seen"], _finish(second)["seen"]])
    assert seen == [0, 1]
    data = r.get(f"PHPREDIS_SESSION:{session}")
    assert "visits|i:2;" in data, data
    assert r.exists(f"PHPREDIS_SESSION:{session}_LOCK") == 0
