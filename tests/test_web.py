"""The web process `make run` starts (gunicorn) serves the admin, static files included."""

import pytest
import requests

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_admin_login_page_and_its_stylesheet_are_served(web_server):
    web = web_server
    page = requests.get(f"{web}/admin/login/", timeout=10)
    assert page.status_code == 200
    assert "PowerAutomation" in page.text
    css = requests.get(f"{web}/static/admin/css/base.css", timeout=10)
    assert css.status_code == 200
    assert "text/css" in css.headers["Content-Type"]
