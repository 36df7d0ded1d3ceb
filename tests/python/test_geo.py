"""GEO commands: GEOADD, GEODIST, GEOHASH, GEOPOS, GEORADIUS[_RO],
GEORADIUSBYMEMBER[_RO], GEOSEARCH, GEOSEARCHSTORE. The expected texts are what
redis-server 7 answers (the suite runs against it too): scores are Redis's own 52-bit
geohashes, so a geo set moves between the two with DUMP/RESTORE."""

import pytest
import redis

pytestmark = pytest.mark.geo

SICILY = [13.361389, 38.115556, "Palermo", 15.087269, 37.502669, "Catania"]


def test_geoadd_stores_redis_scores_and_options(r):
    assert r.execute_command("GEOADD", "g:s", *SICILY) == 2
    # The scores Redis stores (its documentation shows the same).
    assert r.zrange("g:s", 0, -1, withscores=True, score_cast_func=int) == [
        ("Palermo", 3479099956230698), ("Catania", 3479447370796909)]
    assert r.execute_command("GEOADD", "g:s", "NX", 0, 0, "Palermo") == 0
    assert r.execute_command("GEOADD", "g:s", "XX", "CH", 13.36, 38.11, "Palermo", 1, 1, "x") == 1
    assert r.zscore("g:s", "x") is None
    with pytest.raises(redis.ResponseError, match="^syntax error$"):
        r.execute_command("GEOADD", "g:s", "XX", "NX", 1, 1, "y")
    with pytest.raises(redis.ResponseError, match="^syntax error$"):
        r.execute_command("GEOADD", "g:s", 1, 1, "y", 2)
    with pytest.raises(redis.ResponseError,
                       match=r"^invalid longitude,latitude pair 200\.000000,100\.000000$"):
        r.execute_command("GEOADD", "g:s", 200, 100, "y")
    with pytest.raises(redis.ResponseError, match="^value is not a valid float$"):
        r.execute_command("GEOADD", "g:s", "east", 1, "y")
    r.set("g:str", "x")
    with pytest.raises(redis.ResponseError, match="^WRONGTYPE"):
        r.execute_command("GEOADD", "g:str", 1, 1, "y")


def test_geopos_geohash_geodist(raw):
    # A raw connection: redis-py turns GEOPOS and GEODIST replies into floats, and the
    # exact texts are what is checked here.
    c = raw()
    c.call("GEOADD", "g:s", *SICILY)
    assert c.call("GEOPOS", "g:s", "Palermo", "nowhere") == [
        ["13.36138933897018433", "38.11555639549629859"], None]
    assert c.call("GEOHASH", "g:s", "Palermo", "Catania", "nowhere") == [
        "sqc8b49rny0", "sqdtr74hyu0", None]
    assert c.call("GEODIST", "g:s", "Palermo", "Catania") == "166274.1516"
    assert c.call("GEODIST", "g:s", "Palermo", "Catania", "km") == "166.2742"
    assert c.call("GEODIST", "g:s", "Palermo", "Catania", "MI") == "103.3182"
    assert c.call("GEODIST", "g:s", "Palermo", "nowhere") is None
    assert c.call("GEODIST", "g:missing", "a", "b") is None
    assert str(c.call("GEODIST", "g:s", "Palermo", "Catania", "yd")) == (
        "ERR unsupported unit provided. please use M, KM, FT, MI")
    assert str(c.call("GEODIST", "g:s", "Palermo", "Catania", "km", "x")) == "ERR syntax error"
    assert c.call("GEOPOS", "g:missing", "a") == [None]


def test_geopos_in_resp3_answers_doubles(raw):
    c = raw()
    c.call("HELLO", "3")
    c.call("GEOADD", "g:s", *SICILY)
    c.send("GEOPOS", "g:s", "Palermo", "nowhere")
    assert c.read_line() == b"*2"
    assert c.read_line() == b"*2"
    assert c.read_line() == b",13.36138933897018433"
    assert c.read_line() == b",38.11555639549629859"
    assert c.read_line() == b"_"
    c.call("DEL", "g:s")


def test_georadius_and_geosearch_replies(r):
    r.execute_command("GEOADD", "g:s", *SICILY)
    assert r.execute_command("GEORADIUS", "g:s", 15, 37, 200, "km", "ASC") == [
        "Catania", "Palermo"]
    assert r.execute_command(
        "GEORADIUS", "g:s", 15, 37, 200, "km", "WITHDIST", "WITHCOORD", "WITHHASH", "DESC") == [
        ["Palermo", "190.4424", 3479099956230698,
         ["13.36138933897018433", "38.11555639549629859"]],
        ["Catania", "56.4413", 3479447370796909,
         ["15.08726745843887329", "37.50266842333162032"]]]
    assert r.execute_command("GEORADIUS_RO", "g:s", 15, 37, 100, "km") == ["Catania"]
    assert r.execute_command("GEORADIUSBYMEMBER", "g:s", "Palermo", 200, "km", "COUNT", 1) == [
        "Palermo"]
    assert r.execute_command(
        "GEOSEARCH", "g:s", "FROMLONLAT", 15, 37, "BYBOX", 400, 400, "km", "ASC", "WITHDIST") == [
        ["Catania", "56.4413"], ["Palermo", "190.4424"]]
    assert r.execute_command(
        "GEOSEARCH", "g:s", "FROMMEMBER", "Catania", "BYRADIUS", 1, "m") == ["Catania"]
    assert r.execute_command("GEOSEARCH", "g:missing", "FROMLONLAT", 0, 0, "BYRADIUS", 1, "m") == []


def test_search_errors_in_redis_order(r):
    r.execute_command("GEOADD", "g:s", *SICILY)
    cases = [
        (("GEOSEARCH", "g:s", "BYRADIUS", 1, "km", "ASC", "WITHDIST"),
         "^exactly one of FROMMEMBER or FROMLONLAT can be specified for GEOSEARCH$"),
        (("GEOSEARCH", "g:s", "FROMLONLAT", 1, 1, "ASC", "WITHDIST"),
         "^exactly one of BYRADIUS and BYBOX can be specified for GEOSEARCH$"),
        (("GEOSEARCH", "g:s", "FROMLONLAT", 1, 1, "FROMMEMBER", "Palermo", "BYRADIUS", 1, "km"),
         "^syntax error$"),
        (("GEOSEARCH", "g:s", "FROMMEMBER", "nowhere", "BYRADIUS", 1, "km"),
         "^could not decode requested zset member$"),
        (("GEORADIUS", "g:s", 15, 37, 200, "km", "ANY"),
         "^the ANY argument requires COUNT argument$"),
        (("GEORADIUS", "g:s", 15, 37, 200, "km", "COUNT", 0), "^COUNT must be > 0$"),
        (("GEORADIUS", "g:s", 15, 37, -1, "km"), "^radius cannot be negative$"),
        (("GEORADIUS", "g:s", 15, 37, "far", "km"), "^need numeric radius$"),
        (("GEORADIUS", "g:s", 15, 37, 200, "km", "STORE", "g:d", "WITHDIST"),
         "^STORE option in GEORADIUS is not compatible with WITHDIST, WITHHASH and "
         "WITHCOORD options$"),
        (("GEORADIUS_RO", "g:s", 15, 37, 200, "km", "STORE", "g:d"), "^syntax error$"),
        (("GEOSEARCH", "g:s", "FROMLONLAT", 1, 1, "BYBOX", -1, 1, "km"),
         "^height or width cannot be negative$"),
    ]
    for args, message in cases:
        with pytest.raises(redis.ResponseError, match=message):
            r.execute_command(*args)
    r.set("g:str", "x")
    with pytest.raises(redis.ResponseError, match="^WRONGTYPE"):
        r.execute_command("GEOSEARCH", "g:str", "FROMLONLAT", 1, 1, "BYRADIUS", 1, "km")


def test_store_and_storedist(r):
    r.execute_command("GEOADD", "g:s", *SICILY)
    r.set("g:d", "old")
    r.expire("g:d", 100)
    assert r.execute_command("GEORADIUS", "g:s", 15, 37, 200, "km", "STORE", "g:d") == 2
    assert r.ttl("g:d") == -1
    assert r.zrange("g:d", 0, -1, withscores=True, score_cast_func=int) == [
        ("Palermo", 3479099956230698), ("Catania", 3479447370796909)]
    assert r.execute_command(
        "GEORADIUSBYMEMBER", "g:s", "Palermo", 100, "km", "STOREDIST", "g:d") == 1
    assert r.zrange("g:d", 0, -1, withscores=True) == [("Palermo", 0.0)]
    assert r.execute_command(
        "GEOSEARCHSTORE", "g:d2", "g:s", "FROMLONLAT", 15, 37, "BYRADIUS", 200, "km",
        "STOREDIST", "COUNT", 1) == 1
    assert r.zrange("g:d2", 0, -1) == ["Catania"]
    assert 56.44 < r.zscore("g:d2", "Catania") < 56.45
    # Nothing found, or no source: the destination is deleted.
    assert r.execute_command(
        "GEOSEARCHSTORE", "g:d2", "g:s", "FROMLONLAT", 0, 0, "BYRADIUS", 1, "m") == 0
    assert r.exists("g:d2") == 0
    assert r.execute_command("GEORADIUS", "g:missing", 0, 0, 1, "m", "STORE", "g:d") == 0
    assert r.exists("g:d") == 0


def test_geo_set_round_trips_through_dump(r, rb):
    r.execute_command("GEOADD", "g:s", *SICILY)
    rb.restore("g:copy", 0, rb.dump("g:s"))
    assert r.execute_command("GEODIST", "g:copy", "Palermo", "Catania") == 166274.1516
