"""What a number from Volley means: units and their parsing (durations, percentages,
targets, the defaults), estimators and their intervals, the sequential plan of looks.

The bottom layer: plain functions of numbers, no processes, files or machine. Everything
above may use it.
"""

__all__ = ["units", "stats", "sequential"]
