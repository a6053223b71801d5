"""Units, both ways: what users type for durations, confidence levels, precision targets
and rates, turned into numbers or a BadInput that says what is wrong (shared by the
command line and the experiment files); and how latencies and durations are written for
a person."""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
C = TypeVar("C", bound=enum.StrEnum)


# The choices an option offers, as enums of the very strings typed on the command line and
# written in JSON and experiment files (a StrEnum member is its string).
class IdleStates(enum.StrEnum):
    """While measuring: hold the CPUs out of deep idle states, or leave them to the machine."""

    SHALLOW = "shallow"
    ANY = "any"


class Arrivals(enum.StrEnum):
    """The open loop's gaps between a client's sends."""

    POISSON = "poisson"
    FIXED = "fixed"


class Restart(enum.StrEnum):
    """What each run starts afresh: the server (and connections), or connections only."""

    SERVER = "server"
    CONNECTIONS = "connections"


class Noisy(enum.StrEnum):
    """A run disturbed by other work on the pinned CPUs: kept (with a warning), dropped, or
    the measurement failed."""

    KEEP = "keep"
    DROP = "drop"
    FAIL = "fail"


class SweepOrder(enum.StrEnum):
    """The order a sweep plays its points in (volley.records.experiment)."""

    SEQUENTIAL = "sequential"
    IN_PASSES = "interleaved"


def choose(choices: type[C], text: str, option: str) -> C:
    """``text`` as one of ``choices``, or BadInput naming them."""
    try:
        return choices(text)
    except ValueError:
        spelled = ", ".join(choices)
        raise BadInput(f"{option} {text!r} is not one of {spelled}") from None


# volley-bench's defaults as a user would type them: the one table the command line, the
# compare --run options and experiment files (for their time estimates) read.
BENCH_DEFAULTS = {
    "precision": "1%",
    "confidence": "0.95",
    "max-time": "180s",
    "warmup": "0.25s",
    "run-time": "0.5s",
    "min-runs": "10",
    "restart": "server",
    "noisy": "keep",
    "arrivals": "poisson",
    "op-timeout": "10s",
    "startup-timeout": "10s",
    "idle-states": "shallow",
}


class BadInput(ValueError):
    """Input that makes no sense; reported in one line with exit status 2."""


_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*")
_SECONDS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration_s(text: str, option: str, allow_zero: bool = False) -> float:
    """``"180s"``, ``"3m"``, ``"500ms"`` -> seconds. A bare number is refused (is
    ``--warmup 3`` three seconds or three runs?), except 0, which is 0 in any unit."""
    match = _DURATION.fullmatch(text)
    if not match:
        raise BadInput(f"{option} {text!r} is not a duration; write it like 30s, 500ms or 3m")
    number, unit = float(match.group(1)), match.group(2)
    if unit is None and number != 0:
        raise BadInput(f"{option} {text.strip()!r} needs a unit: say {text.strip()}s")
    seconds = number * _SECONDS[unit or "s"]
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


_RATE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([kKmM]?)\s*(?:ops/s)?\s*")
_RATE_SCALE = {"": 1.0, "k": 1e3, "m": 1e6}


def parse_rate(text: str, option: str = "--rate") -> float:
    """``"50k"``, ``"1.5M"``, ``"2000"`` -> ops per second (above zero)."""
    match = _RATE.fullmatch(text)
    if not match:
        raise BadInput(
            f"{option} {text!r} is not a rate; write ops per second like 2000, 50k or 1.5M"
        )
    rate = float(match.group(1)) * _RATE_SCALE[match.group(2).lower()]
    if rate <= 0:
        raise BadInput(f"{option} {text!r} must be more than zero")
    return rate


_TIME_NS = {"ns": 1.0, "us": 1e3, "µs": 1e3, "ms": 1e6, "s": 1e9}
_TARGET = re.compile(
    r"\s*(?:(mean|p50|p90|p99|p99\.9)\s*:)?\s*([0-9]*\.?[0-9]+)\s*(%|ns|us|µs|ms|s)\s*"
)
STATISTICS = ("mean", "p50", "p90", "p99", "p99.9")
# A statistic as a JSON key: snake_case like every key Volley writes ("p99_9"), so that
# jq's .latency_ns.p99_9 and pandas' columns need no quoting. As a value (a row's
# "statistic", a target "p99.9:20us") it stays as typed on the command line.
STATISTIC_KEYS = {name.replace(".", "_"): name for name in STATISTICS}


def json_keys(by_statistic: dict[str, T]) -> dict[str, T]:
    """``{"p99.9": x}`` -> ``{"p99_9": x}``: a dict keyed by statistic, for writing."""
    return {key.replace(".", "_"): value for key, value in by_statistic.items()}


def statistic_keys(data: dict[str, T]) -> dict[str, T]:
    """Back from ``json_keys``; a file written before snake_case keys ("p99.9") reads alike."""
    return {STATISTIC_KEYS.get(key, key): value for key, value in data.items()}


@dataclass(frozen=True)
class Target:
    """A stopping target: the confidence interval of ``statistic`` ("mean", "p99", ...) no
    wider (half-width) than a share of its value, or than a time."""

    statistic: str = "mean"
    relative: float | None = None
    absolute_ns: float | None = None

    def half_width_ns(self, value_ns: float) -> float:
        if self.relative is not None:
            return self.relative * value_ns
        assert self.absolute_ns is not None
        return self.absolute_ns

    def __str__(self) -> str:
        amount = (
            f"{self.relative * 100:g}%" if self.relative is not None else f"{self.absolute_ns:g}ns"
        )
        return f"{self.statistic}:{amount}"


def parse_target(text: str, option: str = "--precision") -> Target:
    """``"1%"`` (of the mean), ``"5us"``, ``"p99:5%"``, ``"p99.9:20us"``."""
    match = _TARGET.fullmatch(text)
    if not match:
        raise BadInput(
            f"{option} {text!r} is not a target; write a share of the mean like 1%, a time "
            f"like 5us, or a percentile's like p99:5% (one of {', '.join(STATISTICS)})"
        )
    statistic, value, unit = match.group(1) or "mean", float(match.group(2)), match.group(3)
    if unit == "%":
        if not 0 < value < 100:
            raise BadInput(f"{option} {text!r}: a percentage must be above 0 and below 100")
        return Target(statistic, relative=value / 100)
    if value <= 0:
        raise BadInput(f"{option} {text!r}: the time must be above zero")
    return Target(statistic, absolute_ns=value * _TIME_NS[unit])


def parse_targets(texts: list[str], option: str = "--precision") -> list[Target]:
    """Several targets; a later one for the same statistic replaces the earlier."""
    chosen: dict[str, Target] = {}
    for text in texts:
        target = parse_target(text, option)
        chosen[target.statistic] = target
    return list(chosen.values())


def format_ns(ns: float) -> str:
    """A latency with a unit that keeps three or four significant digits."""
    if not math.isfinite(ns):
        return "?"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if abs(ns) >= scale:
            return (
                f"{ns / scale:.3g} {unit}" if abs(ns) >= 100 * scale else f"{ns / scale:.2f} {unit}"
            )
    return f"{ns:.0f} ns"


def format_ms(seconds: float) -> str:
    """A short wait, like how long a server took to end: whole milliseconds."""
    return f"{seconds * 1000:.0f} ms"


def format_duration(seconds: float) -> str:
    """A long wait, like a sweep's: 45s, 3m07s, 1h02m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
