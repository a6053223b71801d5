"""Playing runs: the server process and its watchdog, the pinned worker processes and
their Cython hot loop (``volley._core``), and the coordinator that starts them, plays one
run when asked (``play``) and says what it did.

It knows nothing of stopping rules or histories: the measuring loop above drives it.
"""

__all__ = ["play", "server", "watchdog", "worker", "coordinator", "fake"]
