from django.contrib import admin
from django.urls import path

from . import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("orders/<int:n>", views.create_order),
    path("hooks/in", views.receive),
]
