"""Read JSON so that any damaged or hostile text is a ValueError: nesting past Python's recursion limit
(``"[" * 100000``) makes :func:`json.loads` raise RecursionError, which readers catching ValueError for "damaged
file" let through as a traceback (a message on a ROS topic ended the process). No dependencies: the ROS tools
import it."""

from __future__ import annotations

import json

TOO_DEEP = "nested too deeply to read"


class JsonTooDeepError(ValueError):
    """JSON nested deeper than Python's parser recurses: a ValueError, so callers name their file as for any other
    malformed JSON."""

    def __init__(self):
        super().__init__(TOO_DEEP)


def load_json(text: str | bytes):
    """``json.loads(text)``; JsonTooDeepError (a ValueError, message ``TOO_DEEP``) instead of RecursionError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise JsonTooDeepError() from None
