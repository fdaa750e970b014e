"""Text that may reach the database: valid UTF-8 without NUL (Postgres refuses both).

Input (REST bodies, query and path parameters, the CLI, JSOC replies) is *checked* with
``text_problem`` / ``json_text_problems`` and refused with a clear message; text the service
writes itself (error messages, which may quote anything) is *cleaned* with ``clean_text``.
"""

from __future__ import annotations

import math
import re
from typing import Any

MAX_JSON_DEPTH = 32  # a job spec nests 3 levels; nothing legitimate comes near this
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # tab, LF and CR are kept


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored (a NUL, a lone surrogate: not UTF-8), or None."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000)"
    match = _SURROGATE.search(text)
    if match:
        return (f"contains a lone surrogate (\\u{ord(match[0]):04x}), which is not valid "
                "UTF-8 text")
    return None


def name_problem(text: str) -> str | None:
    """Like ``text_problem``, for names (paths, ids, keys): also no control characters."""
    problem = text_problem(text)
    if problem is None and (_CONTROL.search(text) or any(c in text for c in "\t\n\r")):
        problem = "contains a control character (newline, tab …)"
    return problem


def clean_text(text: str) -> str:
    """``text`` made storable: NUL -> ``\\x00``, lone surrogates -> ``\\udXXX`` escapes."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if _SURROGATE.search(text):
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def json_text_problems(data: Any, path: str = "") -> list[str]:
    """Every string (key or value) of a JSON document that cannot be stored, and every
    number that is not finite, as "<dotted.path>: problem" (iterative: no recursion limit)."""
    problems: list[str] = []
    stack: list[tuple[str, Any, int]] = [(path, data, 0)]
    while stack:
        where, value, depth = stack.pop()
        label = where or "the body"
        if depth > MAX_JSON_DEPTH:
            problems.append(f"{label}: nested more than {MAX_JSON_DEPTH} levels deep")
            continue
        if isinstance(value, str):
            problem = text_problem(value)
            if problem:
                problems.append(f"{label}: {problem}")
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{label}: {value} is not a finite number")
        elif isinstance(value, dict):
            for key, item in value.items():
                key_text = str(key)
                problem = text_problem(key_text)
                if problem:
                    problems.append(f"{label}: a field name {problem}")
                    key_text = clean_text(key_text)
                stack.append((f"{where}.{key_text}" if where else key_text, item, depth + 1))
        elif isinstance(value, list | tuple):
            stack.extend((f"{where}.{i}" if where else str(i), item, depth + 1)
                         for i, item in enumerate(value))
    return sorted(problems)
