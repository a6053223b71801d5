"""The command lines: ``volley-bench`` (``bench``) and the ``volley`` command group (``app``).
The top layer: options in, a result and an exit status out.
"""

__all__ = ["bench", "app"]
