"""Lua scripting as client libraries use it: redis-py's Lock (its scripts by EVALSHA,
falling back to EVAL), django-redis's incr script, the phpredis session-lock release,
SCRIPT LOAD/EXISTS/FLUSH, and the error texts clients match on."""

import hashlib
import time

import pytest
import redis
from redis.exceptions import LockError, LockNotOwnedError, NoScriptError, ResponseError

pytestmark = pytest.mark.scripting

# django-redis's DefaultClient.incr (ignore_key_check=False): INCRBY only if the key
# exists, so a missing key raises ValueError instead of starting at the delta.
DJANGO_REDIS_INCR = """
local exists = redis.call('EXISTS', KEYS[1])
if (exists == 1) then
    return redis.call('INCRBY', KEYS[1], ARGV[1])
else return false end
"""

# The session-lock release phpredis sends (EVALSHA first, EVAL after NOSCRIPT).
PHPREDIS_UNLOCK = (
    'if redis.call("get",KEYS[1]) == ARGV[1] then return redis.call("del",KEYS[1]) '
    "else return 0 end"
)


def test_redis_py_lock_acquire_extend_release(r, r2):
    lock = r.lock("lock:resource", timeout=10)
    assert lock.acquire(blocking=False)
    assert lock.locked() and lock.owned()
    other = r2.lock("lock:resource", timeout=10)
    assert not other.acquire(blocking=False)
    assert lock.extend(5)  # LUA_EXTEND_SCRIPT: adds to the TTL
    assert 10_000 < r.pttl("lock:resource") <= 15_000
    assert lock.reacquire()  # LUA_REACQUIRE_SCRIPT: TTL back to the timeout
    assert 9_000 < r.pttl("lock:resource") <= 10_000
    with pytest.raises(LockNotOwnedError):
        other.do_release(b"not-the-token")
    lock.release()  # LUA_RELEASE_SCRIPT
    assert not lock.locked()
    assert other.acquire(blocking=False)
    other.release()
    with pytest.raises(LockError):
        other.release()


def test_redis_py_lock_as_context_manager_serializes_counters(r):
    for _ in range(20):
        with r.lock("lock:counter", timeout=5, blocking_timeout=5):
            r.incr("counter")
    assert r.get("counter") == "20"


def test_django_redis_incr_script(r):
    r.set("cache:hits", 10, ex=1000)
    incr = r.register_script(DJANGO_REDIS_INCR)
    assert incr(keys=["cache:hits"], args=[5]) == 15
    assert r.eval(DJANGO_REDIS_INCR, 1, "cache:hits", -3) == 12
    assert 990 <= r.ttl("cache:hits") <= 1000  # INCRBY keeps the TTL
    # A missing key: the script returns false, which arrives as nil.
    assert incr(keys=["cache:missing"], args=[1]) is None
    assert r.exists("cache:missing") == 0


def test_phpredis_session_unlock_evalsha_then_eval(r):
    sha = hashlib.sha1(PHPREDIS_UNLOCK.encode()).hexdigest()
    r.script_flush()
    r.set("PHPREDIS_SESSION:abc_LOCK", "secret-token")
    with pytest.raises(NoScriptError):
        r.evalsha(sha, 1, "PHPREDIS_SESSION:abc_LOCK", "secret-token")
    # A wrong token releases nothing.
    assert r.eval(PHPREDIS_UNLOCK, 1, "PHPREDIS_SESSION:abc_LOCK", "other") == 0
    assert r.evalsha(sha, 1, "PHPREDIS_SESSION:abc_LOCK", "secret-token") == 1
    assert r.exists("PHPREDIS_SESSION:abc_LOCK") == 0


def test_script_load_exists_flush(r):
    sha = r.script_load("return ARGV[1]")
    assert sha == hashlib.sha1(b"return ARGV[1]").hexdigest()
    assert r.script_exists(sha, "0" * 40) == [True, False]
    assert r.evalsha(sha, 0, "x") == "x"
    assert r.script_flush() is True
    assert r.script_exists(sha) == [False]
    with pytest.raises(NoScriptError, match="No matching script. Please use EVAL."):
        r.evalsha(sha, 0)


def test_conversions(r):
    r.hset("h", mapping={"a": "1"})
    assert r.eval("return {1, 'two', {3, 'four'}, nil, 'lost'}", 0) == [1, "two", [3, "four"]]
    assert r.eval("return redis.call('HGETALL', KEYS[1])", 1, "h") == ["a", "1"]
    assert r.eval("return 7.9", 0) == 7
    assert r.eval("return true", 0) == 1
    assert r.eval("return false", 0) is None
    assert r.eval("return redis.call('GET', 'nope') == false", 0) == 1
    assert r.eval("return {ok='FINE'}", 0) == "FINE"
    assert r.eval("return redis.sha1hex('')", 0) == "da39a3ee5e6b4b0d3255bfef95601890afd80709"
    assert r.eval("return type(redis.call('SET', KEYS[1], 'v'))", 1, "k") == "table"
    assert r.eval("return redis.call('SET', KEYS[1], 'v')['ok']", 1, "k") == "OK"


def test_error_texts(r):
    r.hset("h", "a", "1")
    body = "return redis.call('INCR', KEYS[1])"
    sha = hashlib.sha1(body.encode()).hexdigest()
    with pytest.raises(ResponseError) as e:
        r.eval(body, 1, "h")
    assert str(e.value) == (
        "WRONGTYPE Operation against a key holding the wrong kind of value "
        f"script: {sha}, on @user_script:1.")
    with pytest.raises(ResponseError) as e:
        r.eval("return redis.pcall('INCR', KEYS[1])", 1, "h")
    assert str(e.value) == "WRONGTYPE Operation against a key holding the wrong kind of value"
    with pytest.raises(ResponseError) as e:
        r.eval("local a = 1\nerror('boom')", 0)
    assert str(e.value).startswith("user_script:2: boom script: ")
    with pytest.raises(ResponseError, match="Attempt to modify a readonly table"):
        r.eval("x = 5", 0)
    with pytest.raises(ResponseError, match="nonexistent global variable 'os'"):
        r.eval("return os.time()", 0)
    with pytest.raises(ResponseError, match="Error compiling script"):
        r.eval("return (", 0)
    with pytest.raises(ResponseError, match="Number of keys can't be greater than number of args"):
        r.eval("return 1", 3, "a")
    with pytest.raises(ResponseError, match="Write commands are not allowed from read-only scripts"):
        r.eval_ro("return redis.call('SET', 'a', 'b')", 0)
    with pytest.raises(ResponseError, match="This Redis command is not allowed from script"):
        r.eval("return redis.call('EVAL', 'return 1', 0)", 0)


def test_scripts_are_atomic_and_see_their_own_writes(r):
    script = """
    for i = 1, 100 do redis.call('RPUSH', KEYS[1], i) end
    return redis.call('LLEN', KEYS[1])
    """
    assert r.eval(script, 1, "l") == 100
    assert r.lrange("l", 0, 2) == ["1", "2", "3"]


def test_time_inside_a_script(r):
    secs, micros = r.eval("return redis.call('TIME')", 0)
    assert abs(int(secs) - time.time()) < 60
    assert 0 <= int(micros) < 1_000_000


def test_functions_load_fcall_list_delete(r):
    r.function_flush()
    code = ("#!lua name=counters\n"
            "redis.register_function('bump', function(keys, args) "
            "return redis.call('INCRBY', keys[1], args[1]) end)\n"
            "redis.register_function{function_name='peek', callback=function(keys, args) "
            "return redis.call('GET', keys[1]) end, flags={'no-writes'}}")
    assert r.function_load(code) == "counters"
    with pytest.raises(ResponseError, match="Library 'counters' already exists"):
        r.function_load(code)
    assert r.function_load(code, replace=True) == "counters"
    assert r.fcall("bump", 1, "fn:c", 5) == 5
    assert r.fcall_ro("peek", 1, "fn:c") == "5"
    with pytest.raises(ResponseError, match="Can not execute a script with write flag using \\*_ro command."):
        r.fcall_ro("bump", 1, "fn:c", 1)
    with pytest.raises(ResponseError, match="Function not found"):
        r.fcall("nope", 0)
    def pairs(flat):  # a RESP2 map: [key, value, key, value...]
        return dict(zip(flat[::2], flat[1::2]))

    listed = [pairs(lib) for lib in r.function_list()]
    assert [lib["library_name"] for lib in listed] == ["counters"]
    assert sorted(pairs(f)["name"] for f in listed[0]["functions"]) == ["bump", "peek"]
    assert r.function_delete("counters") is True
    with pytest.raises(ResponseError, match="Library not found"):
        r.function_delete("counters")


def test_function_help_is_redis_text(r):
    help_lines = r.execute_command("FUNCTION", "HELP")
    assert len(help_lines) == 40
    assert help_lines[0] == "FUNCTION <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    assert help_lines[1] == "LOAD [REPLACE] <FUNCTION CODE>"
    assert help_lines[-2:] == ["HELP", "    Prints this help."]
    with pytest.raises(ResponseError, match="wrong number of arguments for .function.help. command"):
        r.execute_command("FUNCTION", "HELP", "extra")
