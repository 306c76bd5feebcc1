"""Root URLs."""

from django.contrib import admin
from django.urls import path

admin.site.site_header = "PowerAutomation deployment coordinator"
admin.site.site_title = "PowerAutomation"

urlpatterns = [
    path("admin/", admin.site.urls),
]
