"""Base view of the management API (kept apart from accounts.drf, which DRF's settings import)."""

from rest_framework.views import APIView


class ManagementAPIView(APIView):
    """Key auth with the management scope (the DRF defaults), plus the rate-limit headers."""

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        state = getattr(request._request, "ratelimit_state", None)
        if state is not None:
            state.apply(response)
        return response
