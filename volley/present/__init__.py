"""What a person reads: the progress of a run or a sweep (``progress``), a run's summary,
comparison tables, the placement ``volley plan`` shows, and the plots and figures
(matplotlib, imported only to draw).
"""

__all__ = ["progress", "report", "plot", "figures", "relative", "layout"]
