"""JSON from outside with bounded cost: the one loader for every JSON parse of bytes we did not write.

Web hooks, form posts, chat transcripts and file imports all parse through `load_json`:
- nesting deeper than MAX_JSON_DEPTH is refused before `json.loads` runs (it recurses per level, so a
  deep array raises RecursionError, or worse, exhausts the C stack);
- integers longer than MAX_INT_DIGITS stay strings, or are refused (Python refuses to convert over
  4,300 digits with a ValueError, and converting long ones is quadratic);
- NaN and Infinity are not JSON and are refused;
- every fault is a `SkippableError` with the reason, which the pipeline turns into a quarantine row.
"""

from __future__ import annotations

import json
from typing import Any

from models.errors import SkippableError

# Enough for any real form or chat event; deeper JSON is an attack on the parser, not a lead.
MAX_JSON_DEPTH = 64
# No id, count or phone number has more digits than this.
MAX_INT_DIGITS = 30


def load_json(data: bytes, *, tool: str, refuse_long_ints: bool = False) -> Any:
    """json.loads with bounded cost: depth checked first, huge integers kept as text (or refused, with
    `refuse_long_ints`: a stored record that carries one is quarantined); SkippableError on fault."""
    # Fewer brackets than the limit cannot nest past it: ordinary records skip the scan below.
    if data.count(b"[") + data.count(b"{") > MAX_JSON_DEPTH:
        _check_depth(data, tool)
    try:
        return json.loads(
            data,
            parse_int=_refuse_long_int if refuse_long_ints else _bounded_int,
            parse_constant=_no_constant,
        )
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as error:
        raise SkippableError(f"{tool}: payload is not valid JSON: {error}") from error


def _check_depth(data: bytes, tool: str) -> None:
    depth = 0
    deepest = 0
    in_string = escaped = False
    for byte in data:  # one linear pass; json.loads itself recurses per level
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    if deepest > MAX_JSON_DEPTH:
        raise SkippableError(f"{tool}: JSON nested {deepest} levels deep (limit {MAX_JSON_DEPTH})")


def _bounded_int(text: str) -> int | str:
    # Python refuses to convert over 4,300 digits with a ValueError; no id or count has more than 30.
    return int(text) if len(text) <= MAX_INT_DIGITS else text


def _refuse_long_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits (limit {MAX_INT_DIGITS})")
    return int(text)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")
