"""Index (data-flow step 6): per space, a FAISS codec chosen and trained once (``codec``), shards encoded
with it and merged list by list (``shards``), float16 refine vectors (``refine``), codec and shard files in
the store (``shard_files``), tombstones filtered inside the search (``tombstones``), a space opened for
search (``search``), the plan and build of every space for a run (``build``), and the BM25 lexical index
built and published the same way (``lexical``). ``faiss_runtime`` is the one place FAISS is configured.

May import ``ingest``, ``models``, ``storage`` and ``config``.
"""
