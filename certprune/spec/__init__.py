"""Property files read into one form: input boxes and disjunctions of linear output constraints."""
