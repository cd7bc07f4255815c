"""The certprune version, stated once: packaging reads it, journals record it."""
__version__ = "0.1.0"
