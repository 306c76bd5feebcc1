"""Root URLs. The admin site is set up in console.admin."""

from django.contrib import admin
from django.urls import include, path

from deployments.views import callback

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/deployment/callback/<str:token>/", callback, name="deployment-callback"),
    path("api/", include("deployments.api.urls")),  # REST API, health, OpenAPI schema and docs
]
