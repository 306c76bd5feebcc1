"""Root URLs. The admin site is set up in console.admin."""

from django.contrib import admin
from django.urls import include, path

from console.views.metrics import metrics
from deployments.views import callback

# The admin modules are imported here, not at start-up (powerautomation/admin_app.py).
admin.autodiscover()

# Under /api/, a 400 Django itself answers (a body over DATA_UPLOAD_MAX_MEMORY_SIZE, ...) is JSON too.
handler400 = "powerautomation.api.bad_request"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/deployment/callback/<str:token>/", callback, name="deployment-callback"),
    path("api/", include("deployments.api.urls")),  # REST API, health, OpenAPI schema and docs
    path("metrics", metrics, name="metrics"),  # Prometheus (console/metrics.py)
]
