"""The admin as the control room, and the one place that sets up the admin site: its titles
and the deployment dashboard on its front page. The model admins register themselves when
their modules are imported here (the admin's autodiscovery imports this package)."""

from django.contrib import admin

from console.admin import deployments, environments  # noqa: F401 (registers the model admins)

admin.site.site_header = "PowerAutomation deployment coordinator"
admin.site.site_title = "PowerAutomation"
admin.site.index_template = "admin/deployments/index.html"
