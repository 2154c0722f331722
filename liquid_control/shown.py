"""Values quoted in error messages, cut to a readable length: a refusal names what it refused without printing a
megabyte string or a 400-digit number whole, and without failing on an integer Python will not print; the valid
name a mistyped one is close to (``did_you_mean``); a count with its noun (``counted``: 1 episode, 2 episodes); and
where a text holds a control character (``control_character_at``)."""

from __future__ import annotations

LIMIT = 60  # characters of a value's repr kept in a message


def shown(value: object, limit: int = LIMIT) -> str:
    """``repr(value)``, cut to ``limit`` characters where longer, with "..." and the value's length (a string's
    characters, else its repr's)."""
    try:
        text = repr(value)
    except ValueError:  # an int past sys.get_int_max_str_digits() (or a container holding one): its repr raises
        if isinstance(value, int):
            return f"an integer of about {int(abs(value).bit_length() * 0.30103) + 1} digits"
        return f"a {type(value).__name__} holding an integer too long to print"
    if len(text) <= limit:
        return text
    length = len(value) if isinstance(value, str) else len(text)
    return f"{text[: _whole_escapes(text, limit)]}... ({length} characters)"


_ESCAPE_LENGTHS = {"x": 4, "u": 6, "U": 10}  # repr's \xNN, \uNNNN, \UNNNNNNNN; every other escape: two characters


def _whole_escapes(text: str, limit: int) -> int:
    """Where to cut ``text`` (a repr) at ``limit`` characters or fewer without splitting a backslash escape."""
    i = 0
    while i < limit:
        if text[i] != "\\" or i + 1 >= len(text):
            i += 1
            continue
        step = _ESCAPE_LENGTHS.get(text[i + 1], 2)
        if i + step > limit:
            return i
        i += step
    return limit


def closest(name: str, valid, cutoff: float = 0.65) -> str | None:
    """The name of ``valid`` closest to ``name`` (difflib's ratio ``cutoff`` or more; 0.6 took 'colour' for 'core'),
    or None: a name mistyped by a letter is answered with the name, not only with the list of every valid one."""
    import difflib

    match = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1, cutoff=cutoff)
    return match[0] if match else None


def did_you_mean(given: list[str], valid) -> str:
    """`` (did you mean 'window'?)`` for the names of ``given`` close to one of ``valid`` (:func:`closest`; several:
    ``'window' for 'windw', 'mode' for 'mod'``); empty where none is."""
    found = [(name, match) for name in given if (match := closest(name, valid)) is not None]
    if not found:
        return ""
    if len(given) == 1:
        return f" (did you mean {found[0][1]!r}?)"
    return " (did you mean " + ", ".join(f"{match!r} for {name!r}" for name, match in found) + "?)"


def counted(count: int, noun: str, plural: str = "") -> str:
    """``1 episode``, ``20 episodes``: ``count`` and ``noun``, plural (``plural``, else an added s) for any count but 1,
    for the messages whose count may be 1 (``eval --episodes 1``)."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


# bidirectional overrides and isolates: they reorder what a terminal or a rendered card shows ("Trojan Source")
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def control_character_at(text: str, allowed: str = "") -> int | None:
    """The index of the first control character of ``text`` (C0, DEL, C1, the line and paragraph separators,
    bidirectional controls) not in ``allowed``, or None. A policy file's name and description came into the node's
    log and ``export``'s output as they were: a downloaded checkpoint whose name held an escape sequence (ESC [2J)
    cleared the terminal and forged a log line. Not ``str.isprintable``, which refuses a no-break space too."""
    for i, ch in enumerate(text):
        if (ch < " " or "\x7f" <= ch <= "\x9f" or ch in "\u2028\u2029" or ch in _BIDI_CONTROLS) and ch not in allowed:
            return i
    return None
