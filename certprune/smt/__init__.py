"""Exact solver back ends: Network encodings for MILP (HiGHS) and SMT (Z3), with time limits."""
