"""Models: the text encoder, CLIP and the BLIP-2 captioner, loaded through the libraries' normal paths
(transformers ``from_pretrained``, open_clip tags or checkpoints), and the checksums of their weights.

Used by ingest, query and learn alike. May import ``storage`` and ``config`` only.
"""


class ModelUnavailable(RuntimeError):
    """Weights could not be loaded; the message says how to provide them."""
