from django.urls import path

from inference import views

urlpatterns = [
    path("models", views.models_list, name="models-list"),
    path("models/<path:model_id>", views.models_detail, name="models-detail"),
    path("chat/completions", views.chat_completions, name="chat-completions"),
    path("completions", views.completions, name="completions"),
    path("embeddings", views.embeddings, name="embeddings"),
]
