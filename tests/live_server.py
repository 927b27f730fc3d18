"""A real uvicorn server in a background thread for tests (see :mod:`mmrag_core.service.background`)."""
from mmrag_core.service.background import live_server

__all__ = ["live_server"]
