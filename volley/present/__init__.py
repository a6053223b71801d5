"""What a person reads: the summary and progress of a run, comparison tables, the placement
``volley plan`` shows, and the plots and figures (matplotlib, imported only to draw).
"""

__all__ = ["report", "plot", "figures", "relative", "layout"]
