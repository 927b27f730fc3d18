"""The HTTP query service (``mmrag serve``): a FastAPI app that answers queries from the published snapshot
and swaps to each newly published one without dropping a request. Build it with :func:`create_app`.

The top of the core: may import every stage."""
from mmrag_core.service.app import create_app

__all__ = ["create_app"]
