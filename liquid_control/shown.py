"""Values quoted in error messages, cut to a readable length: a refusal names what it refused without printing a
megabyte string or a 400-digit number whole, and without failing on an integer Python will not print."""

from __future__ import annotations

LIMIT = 60  # characters of a value's repr kept in a message


def shown(value: object, limit: int = LIMIT) -> str:
    """``repr(value)``, cut to ``limit`` characters where longer, with "..." and the whole repr's length."""
    try:
        text = repr(value)
    except ValueError:
        if not isinstance(value, int):
            raise
        # an int past sys.get_int_max_str_digits(), whose repr raises: its digits counted from its bits
        return f"an integer of about {int(abs(value).bit_length() * 0.30103) + 1} digits"
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"
