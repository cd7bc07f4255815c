"""Comparison reports: result files (gate, certify, verify JSON) read into one view per model, written as HTML,
Markdown and CSV with matplotlib plots."""
