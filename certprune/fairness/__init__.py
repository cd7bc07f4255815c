"""Individual-fairness verification: partitions, the twin network, bounds + search + MILP/Z3, reports."""
