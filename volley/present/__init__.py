"""What a person reads: the summary and progress of a run, comparison tables, and the
plots and figures (matplotlib, imported only to draw).
"""

__all__ = ["report", "plot", "figures", "relative"]
