"""The GPU node: what runs on a GPU machine that joins the fleet (``python -m gpunode``).

Django-free. It registers with a join token, then speaks only the node protocol
(:mod:`nodeprotocol`) over its WebSocket: it never sees the platform's database, Redis, Celery or
Channels layer. The web tier never imports this package.
"""
