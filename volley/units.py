"""What users type for durations and confidence levels, turned into numbers or a BadInput
that says what is wrong (shared by the command line and the experiment files)."""

from __future__ import annotations

import re


class BadInput(ValueError):
    """Input that makes no sense; reported in one line with exit status 2."""


_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*")
_SECONDS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration_s(text: str, option: str, allow_zero: bool = False) -> float:
    """``"180"``, ``"180s"``, ``"3m"``, ``"500ms"`` -> seconds."""
    match = _DURATION.fullmatch(text)
    if not match:
        raise BadInput(f"{option} {text!r} is not a duration; write it like 30s, 500ms or 3m")
    seconds = float(match.group(1)) * _SECONDS[match.group(2)]
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise BadInput(f"{option} {text!r} must be more than zero")
    return seconds


def parse_confidence(text: str) -> float:
    """``0.95`` or ``95%``."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise BadInput(
            f"--confidence {text!r} is not a number; write it like 0.95 or 95%"
        ) from None
    if not 0.5 <= value < 1:
        raise BadInput(f"--confidence {text!r} must be at least 0.5 and below 1 (like 0.95)")
    return value
