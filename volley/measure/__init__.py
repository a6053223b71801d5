"""The measuring loop and what it decides: which run comes next, which failure to report,
when the targets are met (``runs``); one measurement from options to result (``session``);
earlier sittings (``history``); clients on several hosts under MPI (``hosts``).
"""

__all__ = ["runs", "session", "history", "hosts"]
