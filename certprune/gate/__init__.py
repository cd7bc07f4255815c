"""The release gate: a policy of checks run on a model, judged, cached and written for CI."""
