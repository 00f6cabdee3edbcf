from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path

from accounts import views as account_views
from gpucloud.health import health
from gpucloud.views import api_not_found

urlpatterns = [
    path("", include("accounts.urls")),
    path("fleet/", include("deployments.urls")),
    path("", include("billing.urls")),
    path("playground/", include("playground.urls")),  # the playground (issue 11)
    path("login/", account_views.ThrottledLoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # The admin's own login form is throttled like the dashboard's.
    path("admin/login/", account_views.throttle_login_failures(admin.site.login)),
    path("admin/", admin.site.urls),
    # Self-service accounts (sign-up, verification, password reset and change) and staff's Users pages.
    path("", include("accounts.account_urls")),
    path("users/", include("accounts.staff_urls")),
    path("health", health, name="health"),
    path("", include("observability.urls")),  # Prometheus /metrics
    path("v1/", include("inference.urls")),
    path("api/", include("inference.api_urls")),
    path("api/", include("deployments.api_urls")),
    path("api/", include("billing.api_urls")),
    path("api/", include("accounts.api_urls")),
    path("", include("gpucloud.openapi")),  # API docs: /api/schema and /docs/
    # GPU host marketplace: the Host page and GET /api/host/earnings.
    path("host/", include("marketplace.urls")),
    path("api/", include("marketplace.api_urls")),
    # Unknown API URLs get the OpenAI error shape, with DEBUG on or off.
    re_path(r"^(v1|api)/", api_not_found),
]

handler400 = "gpucloud.views.bad_request"
handler403 = "gpucloud.views.permission_denied"
handler404 = "gpucloud.views.not_found"
handler500 = "gpucloud.views.server_error"
