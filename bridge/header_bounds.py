"""A structural pre-scan of a msgpack header: bound what decoding it may build, before it builds.

msgpack builds one Python object per encoded object, and the smallest objects cost the most
memory per byte: an empty map is 1 byte on the wire and ~70 bytes in Python. A header made of
millions of them blocks the I/O thread for seconds and costs ~70x its size. This scan walks the
encoded structure without building anything (string and bin payloads are skipped by length) and
rejects a header that is nested deeper, holds more objects or longer containers than the
protocol needs. After it passes, decoding costs at most ``max_objects`` small objects plus the
str/bin payloads (about 1x their bytes).

The scan costs about as much per object as decoding it, so headers of at most
``scan_above_bytes`` skip it: they cannot hold more than that many objects (each is >= 1 byte),
so their cost is bounded in absolute terms (~70 bytes per byte at worst, < 1 ms), and msgpack's
own nesting limit (1024) applies to them. Nothing in the server recurses over a client value
without a bound (error messages quote through ``bridge.quoting``).
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.protocol import ErrorCode, ProtocolError


@dataclass(frozen=True)
class HeaderBounds:
    """What one request header may hold. The defaults are far above what the protocol uses
    (depth ~7, a few dozen objects; the longest list is ``proprio``, at most 4096 numbers)."""

    max_depth: int = 32  # containers nested in containers
    max_objects: int = 12_288  # encoded objects in the whole header (proprio: 4097; an act: ~25)
    max_array_len: int = 8192  # elements of one array
    max_map_len: int = 1024  # pairs of one map
    max_str_len: int = 1 << 20  # bytes of one str (instructions, ids, questions)
    scan_above_bytes: int = 1024  # smaller headers are bounded by their size alone


# byte -> (kind, n): a scalar of n more bytes, a str/bin/ext with an n-byte length (ext: one more
# type byte), an array or map with an n-byte length, or invalid. fix{map,array,str} are inline.
_SCALAR, _SIZED, _ARRAY, _MAP, _INVALID = 0, 1, 2, 3, 5
_TABLE: list[tuple[int, int]] = [(_INVALID, 0)] * 256
for _b in range(0x00, 0x80):
    _TABLE[_b] = (_SCALAR, 0)
for _b in range(0xE0, 0x100):
    _TABLE[_b] = (_SCALAR, 0)
for _b, _entry in {
    0xC0: (_SCALAR, 0), 0xC2: (_SCALAR, 0), 0xC3: (_SCALAR, 0),
    0xC4: (_SIZED, 1), 0xC5: (_SIZED, 2), 0xC6: (_SIZED, 4),  # bin
    0xC7: (_SIZED, 1), 0xC8: (_SIZED, 2), 0xC9: (_SIZED, 4),  # ext (+1 type byte)
    0xCA: (_SCALAR, 4), 0xCB: (_SCALAR, 8),
    0xCC: (_SCALAR, 1), 0xCD: (_SCALAR, 2), 0xCE: (_SCALAR, 4), 0xCF: (_SCALAR, 8),
    0xD0: (_SCALAR, 1), 0xD1: (_SCALAR, 2), 0xD2: (_SCALAR, 4), 0xD3: (_SCALAR, 8),
    0xD4: (_SCALAR, 2), 0xD5: (_SCALAR, 3), 0xD6: (_SCALAR, 5), 0xD7: (_SCALAR, 9), 0xD8: (_SCALAR, 17),
    0xD9: (_SIZED, 1), 0xDA: (_SIZED, 2), 0xDB: (_SIZED, 4),  # str
    0xDC: (_ARRAY, 2), 0xDD: (_ARRAY, 4), 0xDE: (_MAP, 2), 0xDF: (_MAP, 4),
}.items():
    _TABLE[_b] = _entry
_EXT_BYTES = frozenset((0xC7, 0xC8, 0xC9))
_STR_BYTES = frozenset((0xD9, 0xDA, 0xDB))


def _too_large(what: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_REQUEST, f"header exceeds what a request may hold: {what}")


def _invalid(what: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_REQUEST, f"header is not valid msgpack: {what}")


def check_header_structure(data: bytes | memoryview, bounds: HeaderBounds) -> None:
    """Raise bad_request when ``data`` is not one msgpack object within ``bounds``.

    Truncated data and trailing bytes are rejected too (msgpack would reject them later; here it
    costs nothing extra). Every container must fit in the bytes that remain (>= 1 byte each).
    """
    if len(data) <= bounds.scan_above_bytes:
        return
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    end = len(view)
    pos = 0
    objects = 0
    remaining: list[int] = [1]  # objects still to read at each open nesting level
    table = _TABLE
    max_objects, max_depth = bounds.max_objects, bounds.max_depth
    while remaining:
        if remaining[-1] == 0:
            remaining.pop()
            continue
        remaining[-1] -= 1
        if pos >= end:
            raise _invalid("truncated")
        objects += 1
        if objects > max_objects:
            raise _too_large(f"more than {max_objects} objects")
        byte = view[pos]
        pos += 1
        if 0x80 <= byte <= 0x9F:  # fixmap / fixarray
            count = (byte & 0x0F) * 2 if byte <= 0x8F else byte & 0x0F
            if count:
                if len(remaining) >= max_depth:
                    raise _too_large(f"nested deeper than {max_depth}")
                remaining.append(count)
            continue
        if 0xA0 <= byte <= 0xBF:  # fixstr
            pos += byte & 0x1F
            continue
        kind, n = table[byte]
        if kind == _SCALAR:
            pos += n
            continue
        if kind == _INVALID:
            raise _invalid(f"invalid msgpack byte 0x{byte:02x}")
        if pos + n > end:
            raise _invalid("truncated")
        length = int.from_bytes(view[pos : pos + n], "big")
        pos += n
        if kind == _SIZED:
            if byte in _STR_BYTES and length > bounds.max_str_len:
                raise _too_large(f"a str of {length} bytes (limit {bounds.max_str_len})")
            pos += length + (1 if byte in _EXT_BYTES else 0)
            continue
        limit = bounds.max_array_len if kind == _ARRAY else bounds.max_map_len
        if length > limit:
            raise _too_large(f"a {'list' if kind == _ARRAY else 'map'} of {length} entries (limit {limit})")
        count = length * 2 if kind == _MAP else length
        if count > end - pos:
            raise _invalid("truncated")
        if count:
            if len(remaining) >= max_depth:
                raise _too_large(f"nested deeper than {max_depth}")
            remaining.append(count)
    if pos > end:
        raise _invalid("truncated")
    if pos != end:
        raise _invalid(f"{end - pos} bytes after the header map")
