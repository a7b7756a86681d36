from django.urls import path

from . import views

urlpatterns = [
    path("orders/<int:n>", views.create_order),
    path("hooks/in", views.receive),
]
