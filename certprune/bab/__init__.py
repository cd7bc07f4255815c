"""Branch and bound: the search, branching heuristics and the falsifying attack."""
