"""Exceptions raised by fullconv's Python layer.

They subclass both the precise built-in (ValueError / TypeError) and RuntimeError, so code
written against ``F.convNd`` (which raises RuntimeError) keeps catching them.
"""


class FullConvError(ValueError, RuntimeError):
    """A full-convolution argument has a bad value or shape."""


class FullConvTypeError(TypeError, RuntimeError):
    """A full-convolution argument has the wrong type, dtype or device."""
