from typing import Final

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
