"""What a measurement leaves behind: the result types and their JSON (``results``), the
experiment description a sweep records points of (``experiment``), the sweep"s files
(``store``) and the export formats (``export``).

Above ``system`` (a result records the machine and each run"s noise); below everything that
measures or presents.
"""

__all__ = ["results", "experiment", "store", "export"]
