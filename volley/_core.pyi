import array
from typing import Final

import numpy as np
import numpy.typing as npt

OK: Final[int]
FAILED_ERRNO: Final[int]
PEER_CLOSED: Final[int]
WRONG_REPLY: Final[int]
OP_TIMEOUT: Final[int]

def play(
    fd: int,
    latency_ns: memoryview,
    seed: int,
    start_ns: int,
    deadline_ns: int,
    stop: memoryview,
    measure_from_ns: int = 0,
) -> tuple[int, int, int, int, int]: ...
def monotonic_ns() -> int: ...

LATE_TOLERANCE_NS: Final[int]
RING_WORDS: Final[int]
ARRIVALS: Final[dict[str, int]]

def play_open(
    fd: int,
    latency_ns: memoryview,
    seed: int,
    start_ns: int,
    deadline_ns: int,
    stop: memoryview,
    measure_from_ns: int,
    rate_ops_s: float,
    arrivals: int,
    op_timeout_ns: int,
    late_tolerance_ns: int = ...,
    send_lag_ns: memoryview | None = None,
    spin_ns: int = 0,
) -> tuple[int, int, int, int, int, int, int, int, int, int, int, int]: ...
def bounce(
    line: memoryview | array.array[int] | npt.NDArray[np.int64],
    batch_ns: memoryview | array.array[int] | npt.NDArray[np.int64],
    batch: int,
    measure: bool,
    deadline_ns: int,
) -> int: ...
