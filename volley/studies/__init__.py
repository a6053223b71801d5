"""What is built on single measurements: compare (two results, or two servers run by
run), sweeps of an experiment (in order, or in passes), and the check that a server
keeps the contract.
"""

__all__ = ["compare", "sweep", "passes", "check", "contract", "probe"]
