"""/api/: the deployment endpoints (paths as the product's integration plan names them),
the platform's health, and the OpenAPI schema with its Swagger UI."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from deployments.api import agent, views
from deployments.api.output import CoordinationOutputView
from environments.api.views import ConfigView, RemoteEnvironmentViewSet

app_name = "api"

environment_list = RemoteEnvironmentViewSet.as_view({"get": "list", "post": "create"})
environment_detail = RemoteEnvironmentViewSet.as_view(
    {"get": "retrieve", "put": "update", "patch": "partial_update", "delete": "destroy"}
)

urlpatterns = [
    path("health", views.HealthView.as_view(), name="health"),
    path("version", views.VersionView.as_view(), name="version"),
    path("deployment/trigger-local", views.TriggerLocalView.as_view(), name="trigger-local"),
    path("deployment/status", views.StatusView.as_view(), name="status"),
    path("deployment/history", views.HistoryView.as_view(), name="history"),
    path("deployment/config", ConfigView.as_view(), name="config"),
    path("deployment/environments", environment_list, name="environment-list"),
    path("deployment/environments/<str:environment_id>/", environment_detail, name="environment-detail"),
    path(
        "deployment/coordinations/<str:coordination_id>/",
        views.CoordinationDetailView.as_view(),
        name="coordination-detail",
    ),
    path(
        "deployment/coordinations/<str:coordination_id>/environments/",
        views.CoordinationEnvironmentsView.as_view(),
        name="coordination-environments",
    ),
    path(
        "deployment/coordinations/<str:coordination_id>/events/",
        views.CoordinationEventsView.as_view(),
        name="coordination-events",
    ),
    path(
        "deployment/coordinations/<str:coordination_id>/cancel/",
        views.CoordinationCancelView.as_view(),
        name="coordination-cancel",
    ),
    path(
        "deployment/coordinations/<str:coordination_id>/approve/",
        views.CoordinationApproveView.as_view(),
        name="coordination-approve",
    ),
    path(
        "deployment/coordinations/<str:coordination_id>/retry/",
        views.CoordinationRetryView.as_view(),
        name="coordination-retry",
    ),
    path(
        "deployment/coordinations/<str:coordination_id>/environments/<str:environment_id>/output",
        CoordinationOutputView.as_view(),
        name="coordination-environment-output",
    ),
    # A polling agent's own endpoints (agent token, no user): deployments/api/agent.py.
    path("agent/poll", agent.PollView.as_view(), name="agent-poll"),
    path("agent/runs/<str:run_id>/heartbeat", agent.HeartbeatView.as_view(), name="agent-heartbeat"),
    path("agent/runs/<str:run_id>/output", agent.OutputView.as_view(), name="agent-output"),
    path("agent/runs/<str:run_id>/result", agent.ResultView.as_view(), name="agent-result"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
]
