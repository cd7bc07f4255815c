"""The certprune command line: one module per command; parsing, progress and exit codes only."""
