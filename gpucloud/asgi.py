"""ASGI entry point, served by Daphne: Django for HTTP, Channels for WebSockets."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gpucloud.settings")
django_asgi_app = get_asgi_application()  # set up Django before importing anything that uses models

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from deployments.routing import websocket_urlpatterns  # noqa: E402
from gpucloud.request_threads import PooledASGIHandler  # noqa: E402

# Load (many streams): a request's synchronous work runs on a bounded set of threads, not a thread
# of its own per request in flight.
django_asgi_app = PooledASGIHandler()

# Daphne serves no files itself; SERVE_STATIC=false leaves them to a front proxy.
http_app = ASGIStaticFilesHandler(django_asgi_app) if settings.SERVE_STATIC else django_asgi_app

application = ProtocolTypeRouter({"http": http_app, "websocket": URLRouter(websocket_urlpatterns)})

# Event loop stays free: start the processes that parse large /v1 bodies now, not on the first one.
from inference import bodypool  # noqa: E402

bodypool.warm_up()
