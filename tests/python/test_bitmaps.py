"""Bitmaps: SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP, BITFIELD, BITFIELD_RO (every
expectation holds on redis-server 7 too: scripts/test checks that first)."""

import pytest
import redis

pytestmark = pytest.mark.bitmaps



def test_setbit_getbit(r):
    assert r.setbit("b:k", 7, 1) == 0
    assert r.get("b:k") == "\x01"
    assert r.setbit("b:k", 7, 0) == 1
    assert r.setbit("b:k", 100, 1) == 0
    assert r.strlen("b:k") == 13
    assert r.getbit("b:k", 100) == 1
    assert r.getbit("b:k", 101) == 0
    assert r.getbit("b:k", 10_000) == 0
    assert r.getbit("b:missing", 3) == 0
    with pytest.raises(redis.ResponseError, match="^bit is not an integer or out of range$"):
        r.execute_command("SETBIT", "b:k", 1, 2)
    with pytest.raises(redis.ResponseError, match="^bit offset is not an integer or out of range$"):
        r.setbit("b:k", -1, 1)
    with pytest.raises(redis.ResponseError, match="^bit offset is not an integer or out of range$"):
        r.setbit("b:k", 4 * 1024 * 1024 * 1024, 1)
    r.lpush("b:list", "x")
    with pytest.raises(redis.ResponseError, match="^WRONGTYPE"):
        r.setbit("b:list", 1, 1)
    with pytest.raises(redis.ResponseError, match="^WRONGTYPE"):
        r.getbit("b:list", 1)


def test_bitcount_byte_and_bit_ranges(r):
    r.set("b:s", "foobar")
    assert r.bitcount("b:s") == 26
    assert r.bitcount("b:s", 0, 0) == 4
    assert r.bitcount("b:s", 1, 1) == 6
    assert r.bitcount("b:s", 1, 1, "BYTE") == 6
    assert r.bitcount("b:s", 5, 30, "BIT") == 17
    assert r.bitcount("b:s", -2, -1) == 7
    assert r.bitcount("b:s", -1, -2) == 0
    assert r.bitcount("b:s", 100, 200) == 0
    assert r.bitcount("b:missing") == 0
    with pytest.raises(redis.ResponseError, match="^syntax error$"):
        r.execute_command("BITCOUNT", "b:s", 0)
    with pytest.raises(redis.ResponseError, match="^syntax error$"):
        r.execute_command("BITCOUNT", "b:s", 0, 1, "WORD")


def test_bitpos(r):
    r.set("b:p", b"\xff\xf0\x00")
    assert r.bitpos("b:p", 0) == 12
    assert r.bitpos("b:p", 1, 2) == -1
    assert r.bitpos("b:p", 0, 0, 0) == -1
    assert r.bitpos("b:p", 1, 1) == 8
    assert r.bitpos("b:p", 1, 7, 15, "BIT") == 7
    assert r.execute_command("BITPOS", "b:p", 0, 5, 15, "BIT") == 12
    r.set("b:ones", b"\xff\xff")
    assert r.bitpos("b:ones", 0) == 16, "no end given: zeros past the string"
    assert r.bitpos("b:ones", 0, 0, -1) == -1, "end given: none in the range"
    assert r.bitpos("b:missing", 1) == -1
    assert r.bitpos("b:missing", 0) == 0
    with pytest.raises(redis.ResponseError, match="^The bit argument must be 1 or 0.$"):
        r.execute_command("BITPOS", "b:p", 2)


def test_bitop(r, rb):
    r.set("b:a", b"\x0f\xf0")
    r.set("b:b", b"\xff")
    assert r.bitop("AND", "b:and", "b:a", "b:b") == 2
    assert rb.get("b:and") == b"\x0f\x00"
    assert r.bitop("OR", "b:or", "b:a", "b:b", "b:missing") == 2
    assert rb.get("b:or") == b"\xff\xf0"
    assert r.bitop("XOR", "b:xor", "b:a", "b:b") == 2
    assert rb.get("b:xor") == b"\xf0\xf0"
    r.expire("b:or", 100)
    assert r.bitop("NOT", "b:or", "b:b") == 1
    assert rb.get("b:or") == b"\x00"
    assert r.ttl("b:or") == -1, "BITOP replaces the TTL"
    assert r.bitop("AND", "b:or", "b:missing") == 0
    assert r.exists("b:or") == 0, "an empty result deletes the destination"
    with pytest.raises(redis.ResponseError, match="^BITOP NOT must be called with a single source key.$"):
        r.bitop("NOT", "b:d", "b:a", "b:b")
    with pytest.raises(redis.ResponseError, match="^syntax error$"):
        r.bitop("NAND", "b:d", "b:a")


def test_bitfield(r, rb):
    assert r.execute_command("BITFIELD", "b:f", "SET", "i8", 0, 100, "GET", "i8", 0) == [0, 100]
    assert r.execute_command("BITFIELD", "b:f", "INCRBY", "i8", 0, 100) == [-56]
    assert r.execute_command(
        "BITFIELD", "b:f", "OVERFLOW", "SAT", "INCRBY", "i8", 0, -100, "INCRBY", "u4", "#3", 20
    ) == [-128, 15]
    assert r.execute_command("BITFIELD", "b:f", "OVERFLOW", "FAIL", "INCRBY", "u4", "#3", 1) == [None]
    assert rb.get("b:f") == b"\x80\x0f"
    assert r.execute_command("BITFIELD", "b:f", "GET", "u4", 12, "GET", "i64", 0) == [
        15, int.from_bytes(bytes.fromhex("800f000000000000"), "big", signed=True)]
    assert r.execute_command("BITFIELD_RO", "b:f", "GET", "u8", 0) == [128]
    assert r.execute_command("BITFIELD", "b:missing", "GET", "u8", 0) == [0]
    assert r.exists("b:missing") == 0
    with pytest.raises(redis.ResponseError, match="^BITFIELD_RO only supports the GET subcommand$"):
        r.execute_command("BITFIELD_RO", "b:f", "SET", "u8", 0, 1)
    with pytest.raises(redis.ResponseError, match="^Invalid bitfield type"):
        r.execute_command("BITFIELD", "b:f", "GET", "u64", 0)
    with pytest.raises(redis.ResponseError, match="^Invalid OVERFLOW type specified$"):
        r.execute_command("BITFIELD", "b:f", "OVERFLOW", "MAYBE", "GET", "u8", 0)
    with pytest.raises(redis.ResponseError, match="^syntax error$"):
        r.execute_command("BITFIELD", "b:f", "GET", "u8")
