from django.urls import path

from playground import views

app_name = "playground"

urlpatterns = [
    path("", views.playground, name="playground"),
    path("chat/completions", views.chat_completions, name="chat-completions"),
]
