"""What a person reads: the progress of a run or a sweep (``progress``), a run's summary,
comparison tables, the placement ``volley plan`` shows, what ``volley system`` and ``volley
history show`` list (``listings``), the plots and figures (matplotlib, imported only to
draw), and the tables all of them print (``tables``: rich on a terminal, plain elsewhere).
"""

__all__ = ["progress", "report", "plot", "figures", "relative", "layout", "listings", "tables"]
