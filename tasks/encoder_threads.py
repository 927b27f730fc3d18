"""How many torch threads a model actor should run an encode call on: the cores extraction is not using now."""
from __future__ import annotations

import ray


def encode_threads(reserved: int, node_cores: int) -> int:
    """Threads for an encode call starting now: the CPU slots the actor reserved plus the slots no task holds
    (a running extraction task keeps its core, one tesseract thread each), at least 1 and at most the node's
    cores; so the encoder shares the node while extraction runs and takes all of it once extraction ends.

    Ray's view of free slots is the cluster's; capped at the node's cores it is exact on one node and, on a
    cluster, an upper bound that is reached once every node's extraction is done."""
    free = int(ray.available_resources().get("CPU", 0.0))
    return max(1, min(node_cores, reserved + free))
