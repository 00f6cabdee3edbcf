from channels.auth import AuthMiddlewareStack
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from deployments import consumers

websocket_urlpatterns = [
    # GPU workers authenticate with their node credential in the Authorization header.
    path("ws/workers/", consumers.WorkerConsumer.as_asgi()),
    # Browsers: session login, and only from our own origin (no cross-site WebSockets).
    path("ws/dashboard/", AllowedHostsOriginValidator(AuthMiddlewareStack(consumers.DashboardConsumer.as_asgi()))),
]
