"""Model loading through the libraries' normal paths (transformers, open_clip)."""


class ModelUnavailable(RuntimeError):
    """Weights could not be loaded; the message says how to provide them."""
