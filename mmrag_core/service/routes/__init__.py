"""The service's routes, one router per concern; :func:`mmrag_core.service.app.create_app` mounts them and puts
what they share (settings, store, snapshot holder, caches) on ``app.state``, which :mod:`.deps` hands out."""
