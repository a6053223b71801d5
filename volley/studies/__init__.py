"""What is built on single measurements: compare (two results, or two servers run by
run), sweeps of an experiment (sequential and interleaved), and the check that a server
keeps the contract.
"""

__all__ = ["compare", "sweep", "interleave", "check", "contract", "probe"]
