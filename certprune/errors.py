"""User-facing errors: one readable line each, turned into exit code 2 by the CLI."""

EXIT_USAGE = 2  # the exit code of every user error


class CertpruneError(Exception):
    """Base of every error caused by the user's input (a file, an option, a property)."""


class ModelError(CertpruneError):
    """The model file cannot be read or uses something certprune does not support."""


class UnsupportedLayerError(ModelError):
    """A layer kind or ONNX operator outside what certprune represents."""


class PropertyError(CertpruneError):
    """A property or specification file is malformed or does not match the model."""
