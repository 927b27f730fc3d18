"""Learn (data-flow step 10): training pairs from labelled questions or mined from the corpus, hard
negatives mined from a published snapshot, and the fine-tuning step of the text encoder (and CLIP); the
result is a versioned model in the store.

May import ``answer`` and every stage before it, ``models``, ``storage`` and ``config``.
"""
