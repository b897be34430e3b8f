"""A request body's JSON, read as ``json.loads`` reads it, only faster, and stricter where
``json.loads`` would lose what the client sent.

FastAPI would parse the JSON with the standard library's ``json.loads``: about 100 us for a
typical forecast request and 4.5 ms for a batch of 32 series on this machine, against 10 us and
0.5 ms with orjson. The answer must not change, so orjson only takes the bodies it reads the
same way; anything it refuses goes to ``json.loads`` as before. That keeps:

- ``NaN`` and ``Infinity`` literals (and numbers such as ``1e999``), which orjson rejects and
  ``json.loads`` reads, so that pydantic names the field that holds them ("should be a finite
  number") rather than the whole body being malformed;
- integers beyond the range of a float, which orjson rejects and ``json.loads`` reads (orjson
  reads an integer between 2**64 and that range as a float);
- the error for malformed JSON, which is ``json.loads``'s (position and reason).

Stricter than ``json.loads``:

- only UTF-8 is read (RFC 8259), with or without a byte order mark; ``json.loads`` alone would
  also take UTF-16 and UTF-32;
- a lone UTF-16 surrogate escape (``"\\ud800"``) is refused: it is no character;
- a key given twice in one object is refused: both readers keep the last silently, so a client
  that sent ``"at"`` twice would get an answer for one of them without a word.

:func:`parse` reads a small body that orjson takes and that gives every key once on the event
loop (a typical forecast: 16 us); anything else, ``json.loads`` and the exact search for a
repeated key included (up to seconds for an odd 10 MB body), runs in the threadpool, so that
one body cannot hold up every other request.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import orjson
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool

from service.api.errors import ApiError, Loc, printable, shown

# Where a key ends: its closing quote, then the colon. Any key matches; so may a string value
# holding an escaped quote and a colon, which only sends the body to the exact check.
_KEY_END = re.compile(rb'"[ \t\r\n]*:')
# Bodies up to this size may be read on the event loop (a batch of 32 typical series is 155 KB:
# 0.6 ms); a larger one is read in the threadpool, where its thread hop (0.2-0.4 ms) is small.
INLINE_BYTES = 256 * 1024
KEY_SHOWN = 100  # characters of a key that a location shows: keys can be megabytes


def _invalid_json(position: int, reason: str) -> RequestValidationError:
    """FastAPI's own error for a body that is not JSON (see errors._validation_item)."""
    return RequestValidationError([{"type": "json_invalid", "loc": ("body", position),
                                    "msg": "JSON decode error", "input": {}, "ctx": {"error": reason}}])


async def parse(body: bytes) -> Any:
    """:func:`loads`, off the event loop unless the body is small and plain."""
    if len(body) <= INLINE_BYTES:
        try:
            value = orjson.loads(body)
        except (orjson.JSONDecodeError, RecursionError):
            pass
        else:
            if _each_key_once(body, value):  # nothing more to look at
                return value
    return await run_in_threadpool(loads, body)


def loads(body: bytes) -> Any:
    """The UTF-8 body as ``json.loads`` reads it; a body that is not JSON in UTF-8, or that gives
    a key twice in one object, raises a 422."""
    try:
        value = orjson.loads(body)
    except (orjson.JSONDecodeError, RecursionError):
        value, text = _loads_text(body)
    else:
        text = None
    if not _each_key_once(body, value):  # maybe a key given twice: look closely
        _refuse_repeated_keys(text if text is not None else _text(body))
    return value


def _each_key_once(body: bytes, value: Any) -> bool:
    """True when ``value`` (``body`` parsed) surely holds every key of ``body``; False when a key
    may have been given twice (or a string looks like a key's end), for the exact check."""
    return len(_KEY_END.findall(body)) == _keys(value)


def _text(body: bytes) -> str:
    """The body as text: UTF-8, without a byte order mark (which RFC 8259 lets a reader ignore)."""
    if body[:2] == b"\x1f\x8b":
        raise ApiError(422, ("body",), "the body is gzip-compressed: send it uncompressed (a compressed "
                       "body is refused, with or without Content-Encoding)", "body_not_utf8")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(422, ("body",), f"the body is not UTF-8 (byte 0x{body[exc.start]:02x} at offset "
                       f"{exc.start}): send JSON encoded as UTF-8{_utf16_hint(body)}",
                       "body_not_utf8") from None
    return text.removeprefix("\ufeff")


def _utf16_hint(body: bytes) -> str:
    """JSON is UTF-8 (RFC 8259): json.loads would also read UTF-16 and UTF-32 bytes, and a body
    in one of them fails to decode, or decodes to NULs that fail to parse."""
    utf16 = b"\x00" in body[:4] or body[:2] in (b"\xff\xfe", b"\xfe\xff")
    return "; this body looks like UTF-16 or UTF-32: send UTF-8" if utf16 else ""


def _loads_text(body: bytes) -> tuple[Any, str]:
    """What orjson refuses, read by ``json.loads``: its value and the text it was read from."""
    text = _text(body)
    if not text.strip():
        raise _invalid_json(0, "the body is empty; send a JSON object") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _invalid_json(exc.pos, exc.msg + _utf16_hint(body)) from None
    except RecursionError:
        raise _invalid_json(0, "arrays or objects nested too deeply") from None
    except ValueError:  # Python's cap on the digits of an integer it converts (4300 by default)
        digits = re.search(rf"\d{{{sys.get_int_max_str_digits() + 1},}}", text)
        raise _invalid_json(digits.start() if digits else 0, "a number with more digits than any "
                            "field takes") from None
    if "\\ud" in text or "\\uD" in text:  # json.loads, unlike orjson, reads a lone surrogate escape
        _refuse_lone_surrogates(value)
    return value, text


def _keys(value: Any) -> int:
    """The keys of every object in ``value``, counted fast: a list is taken to be like its first
    item, so a list of numbers, or of lists that start with a number (rows of values), is taken
    to hold no object. Counting fewer than the body holds only sends it to the exact check.
    Each list is looked at once, and without recursion (orjson reads 1024 levels deep)."""
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            count += len(item)
            stack.extend(member for member in item.values() if type(member) in _CONTAINERS)
        elif item:  # a list: only containers are stacked
            first = item[0]
            if type(first) is dict or (type(first) is list and first and type(first[0]) in _CONTAINERS):
                stack.extend(item)
    return count


_CONTAINERS = (dict, list)


class _Pairs(list):
    """An object as ``json.loads`` sees it before it makes a dict: its (key, value) pairs."""


def _refuse_repeated_keys(text: str) -> None:
    """422 naming the first key that an object of ``text`` (valid JSON) gives twice."""
    try:
        parsed = json.loads(text, object_pairs_hook=_Pairs)
    except RecursionError:  # deeper than any field of any body
        raise _invalid_json(0, "arrays or objects nested too deeply") from None
    stack: list[tuple[Any, Loc]] = [(parsed, ("body",))]
    while stack:
        item, loc = stack.pop()
        if isinstance(item, _Pairs):
            seen: set[str] = set()
            for key, _ in item:
                if key in seen:
                    raise ApiError(422, (*loc, _named(key)), f"{shown(printable(key))} is given twice in "
                                   "this object; give each field once (JSON readers differ on which one "
                                   "counts)", "duplicate_key")
                seen.add(key)
            stack.extend((member, (*loc, _named(key))) for key, member in reversed(item)
                         if isinstance(member, list))
        else:
            stack.extend((member, (*loc, i)) for i, member in reversed(list(enumerate(item)))
                         if isinstance(member, list))


def _named(key: str) -> str:
    """A key as a location shows it: printable, and cut."""
    return printable(key if len(key) <= KEY_SHOWN else key[:KEY_SHOWN] + "...")


def _refuse_lone_surrogates(value: Any) -> None:
    """422 naming the first string (or key) that holds a lone UTF-16 surrogate such as ``\\ud800``.

    It is no Unicode character: no answer that echoes it could be written as UTF-8."""
    stack: list[tuple[Any, Loc]] = [(value, ("body",))]
    while stack:
        item, loc = stack.pop()
        if isinstance(item, dict):
            for key, member in reversed(item.items()):
                if (at := _surrogate_at(key)) is not None:
                    _surrogate_error((*loc, _named(key)), key, at, "this key")
                stack.append((member, (*loc, _named(key))))
        elif isinstance(item, list):
            stack.extend((member, (*loc, i)) for i, member in reversed(list(enumerate(item))))
        elif isinstance(item, str) and (at := _surrogate_at(item)) is not None:
            _surrogate_error(loc, item, at, "the string")


def _surrogate_at(text: str) -> int | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _surrogate_error(loc: Loc, text: str, at: int, what: str) -> None:
    raise ApiError(422, loc, f"{what} holds a lone UTF-16 surrogate, {printable(text[at])} at character "
                   f"{at}, which is not a Unicode character: write a character beyond U+FFFF as a surrogate "
                   "pair (\\ud83d\\ude00) or as UTF-8", "string_unicode")
