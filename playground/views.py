"""The playground: a page to try a chat model, and the endpoint its script streams from.

The endpoint is ``/v1/chat/completions`` itself (the same view function) behind the session
instead of a bearer key: see :func:`accounts.auth.session_key_required` and
:mod:`playground.services`.
"""

import inspect

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.urls import reverse

from accounts.auth import session_key_required
from accounts.models import ApiKey
from inference import views as api_views
from playground.selectors import playground_models
from playground.services import PLAYGROUND_KEY_NAME, playground_key

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


@login_required
def playground(request):
    models = playground_models()
    return render(
        request,
        "playground/playground.html",
        {
            "models": models,
            "default_system_prompt": DEFAULT_SYSTEM_PROMPT,
            "endpoint": reverse("playground:chat-completions"),
            "api_base": request.build_absolute_uri("/v1"),
            "key_name": PLAYGROUND_KEY_NAME,
        },
    )


# The very view that serves POST /v1/chat/completions, without its bearer-key decorator.
chat_completions = session_key_required(playground_key, ApiKey.Scope.INFERENCE)(
    inspect.unwrap(api_views.chat_completions)
)
