"""Numeric ``data`` lists of a KServe v2 JSON request, decoded without building Python lists.

Parsing a JSON body with its tensors makes one Python object per element and one list per innermost
row (a 256x256x3 image: 196,608 ints in 65,536 lists), and ``np.asarray`` then walks them again;
both hold the event loop (or the GIL). Here, before the JSON is parsed, each input's
``"data": [...]`` made only of whole numbers, commas, brackets and whitespace is cut out of the text
and replaced by a marker; the rest (names, shapes, parameters) is parsed as before, and each cut-out
span is read as one flat run of numbers when the input is decoded (:func:`parse_numbers`). Arrays
with fractions or exponents stay with orjson, whose float parser is faster than NumPy's text reader
(measured in ``bench/json_tensors``).

Nothing here decides what is valid: when a span is not plainly numeric, a marker lands anywhere but an
input's ``data``, a number does not parse, or the count does not match, the caller falls back to the
full JSON parse, whose checks and error messages are the only ones. Nested lists are read in row-major
order (as their flattening is).
"""

from __future__ import annotations

import os
import re

import numpy as np
import orjson

_DATA_KEY = re.compile(rb'"data"\s*:\s*\[')
_NUMERIC_CHARS = b"0123456789eE+-.,[] \t\n\r"
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]")
_MARK_PREFIX = "\x00infaas-data:"  # a marker, as the parsed JSON holds it
_MARK_TEXT = b'"\\u0000infaas-data:'  # ... and as it is written into the text
_BRACKETS = bytes.maketrans(b"[]", b"  ")
# bodies shorter than this are parsed whole (as cheap); a tuning knob, and the benchmark's way to turn it off
MIN_BYTES = int(os.environ.get("INFAAS_JSON_CUT_MIN_BYTES", str(32 * 1024)))


def _strict_parser() -> bool:
    """NumPy 2 raises on text it cannot read to the end; older versions return what they read."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            np.fromstring(b"1 2", dtype=np.float64, sep=",")
        except ValueError:
            return True
    return False


STRICT = _strict_parser()


def cut_numeric_data(text: bytes | memoryview) -> tuple[bytes, list[bytes]] | None:
    """The JSON text with each numeric ``data`` array replaced by a marker, and the arrays' text; None
    when there is nothing to cut (or the body already holds a marker)."""
    if not STRICT or len(text) < MIN_BYTES:
        return None
    raw = bytes(text)
    if _MARK_TEXT in raw:
        return None
    parts: list[bytes] = []
    spans: list[bytes] = []
    pos = 0
    for key in _DATA_KEY.finditer(raw):
        start = key.end() - 1  # the opening bracket
        if start < pos:
            continue
        end = _array_end(raw, start)
        if end is None:
            continue
        parts += [raw[pos:start], _MARK_TEXT + str(len(spans)).encode() + b'"']
        spans.append(raw[start:end])
        pos = end
    if not spans:
        return None
    parts.append(raw[pos:])
    return b"".join(parts), spans


def _array_end(raw: bytes, start: int) -> int | None:
    """The end (exclusive) of the bracketed array opening at ``start``, if it is made only of numbers,
    commas, whitespace and brackets; None otherwise. In valid JSON such an array is followed by at most
    a comma and whitespace before the next key's quote or the object's brace."""
    stops = [i for i in (raw.find(b'"', start), raw.find(b"}", start)) if i >= 0]
    stop = min(stops) if stops else len(raw)
    if any(raw.find(c, start, stop) >= 0 for c in (b".", b"e", b"E")):
        return None  # fractions or exponents: orjson's float parser is the fast one, nothing to gain
    region = raw[start:stop]
    if region.translate(None, _NUMERIC_CHARS):  # something else: a string, true, null, an object
        return None
    span = region.rstrip(b", \t\n\r")
    if not span.endswith(b"]"):
        return None
    if span.count(b"[") == 1:
        return start + len(span) if span.count(b"]") == 1 else None
    brackets = np.frombuffer(span.translate(None, _NOT_BRACKETS), dtype=np.uint8)
    depth = np.cumsum(brackets == ord("["), dtype=np.int32) - np.cumsum(brackets == ord("]"), dtype=np.int32)
    if depth[-1] != 0 or depth[:-1].min() <= 0:  # one array: it closes at its last bracket, not before
        return None
    return start + len(span)


def marker_index(value: object) -> int | None:
    """The span index a parsed ``data`` value stands for, or None if it is not a marker."""
    if isinstance(value, str) and value.startswith(_MARK_PREFIX):
        return int(value[len(_MARK_PREFIX) :])
    return None


def parse_numbers(span: bytes, dtype: np.dtype, count: int) -> np.ndarray | None:
    """``span`` (a numeric JSON array, maybe nested) as a flat array of ``dtype``; None when it does not
    parse exactly (the caller then parses it as JSON and reports what is wrong).

    Integer types go through NumPy's C reader (~15 ns an element on the EPYC here, against ~30 for a
    flat list and ~150 for a nested one); float types (whole numbers here) through orjson as one flat
    list, the brackets blanked out."""
    flat = span.translate(_BRACKETS)
    commas = flat.count(b",")
    if dtype.kind in "iu" and dtype.itemsize < 8:
        try:
            arr = np.fromstring(flat, dtype=np.int64, sep=",")
        except ValueError:
            return None
        if arr.size and (arr.min() < np.iinfo(dtype).min or arr.max() > np.iinfo(dtype).max):
            return None
    elif dtype.kind == "f":  # whole numbers for a float input (pixels): one flat list, no list per pixel
        try:
            arr = np.asarray(orjson.loads(b"[" + flat + b"]"), dtype=dtype)
        except (orjson.JSONDecodeError, ValueError, TypeError):
            return None
    else:
        return None  # BOOL, 64-bit integers: the JSON parser's exactness is needed
    if arr.size != count or (arr.size and arr.size != commas + 1) or (not arr.size and commas):
        return None
    return arr.astype(dtype, copy=False)
