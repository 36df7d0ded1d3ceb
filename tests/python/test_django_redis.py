"""django-redis's cache backend as a Django application uses it. Its `incr` is a Lua script
(EXISTS, then INCRBY) sent with EVAL; on an error reply it falls back, silently, to a
non-atomic GET and SET, so the test also checks that the script ran (INFO commandstats).
Skipped where django-redis is not installed (tests/python/requirements.txt has it)."""

import pytest

django = pytest.importorskip("django")
pytest.importorskip("django_redis")

pytestmark = pytest.mark.scripting


def cache_at(port: int):
    """Django's default cache, a django-redis RedisCache on 127.0.0.1:`port` (settings are
    configured once per process: later calls point it elsewhere)."""
    from django.conf import settings

    location = f"redis://127.0.0.1:{port}/0"
    if not settings.configured:
        settings.configure(CACHES={"default": {
            "BACKEND": "django_redis.cache.RedisCache", "LOCATION": location}})
        django.setup()
    from django.core.cache import caches

    settings.CACHES["default"]["LOCATION"] = location
    caches["default"].close()
    del caches["default"]
    return caches["default"]


@pytest.fixture
def cache(server):
    c = cache_at(server.port)
    yield c
    c.close()


def eval_calls(r) -> int:
    return r.info("commandstats").get("cmdstat_eval", {}).get("calls", 0)


def test_incr_and_decr_run_the_script(r, cache):
    before = eval_calls(r)
    cache.set("hits", 10, timeout=1000)
    assert cache.incr("hits", 5) == 15
    assert cache.decr("hits", 3) == 12
    assert cache.get("hits") == 12
    # INCRBY keeps the TTL the script found.
    assert 990 <= cache.ttl("hits") <= 1000
    # A missing key: the script answers false, django-redis raises ValueError.
    with pytest.raises(ValueError):
        cache.incr("missing")
    assert not cache.has_key("missing")
    # Each incr/decr went through EVAL (no silent GET/SET fallback).
    assert eval_calls(r) - before == 3
