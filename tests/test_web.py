"""The web process `make run` starts (gunicorn) serves the admin, static files included."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.support.ports import free_port, wait_for_port
from tests.support.processes import ROOT, stop_process_group

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_admin_login_page_and_its_stylesheet_are_served(web_server):
    web = web_server
    page = requests.get(f"{web}/admin/login/", timeout=10)
    assert page.status_code == 200
    assert "PowerAutomation" in page.text
    css = requests.get(f"{web}/static/admin/css/base.css", timeout=10)
    assert css.status_code == 200
    assert "text/css" in css.headers["Content-Type"]


def copy_of_the_project(folder: Path) -> Path:
    """The project's code without its database, secret key or collected static files: a
    fresh checkout."""
    ignored = shutil.ignore_patterns(
        ".git", ".venv", ".ruff_cache", "__pycache__", "staticfiles", "db.sqlite3*", ".secret_key"
    )
    shutil.copytree(ROOT, folder, ignore=ignored, symlinks=True)
    return folder


SERVERS = {
    "gunicorn": lambda port: [
        str(Path(sys.executable).parent / "gunicorn"),
        "powerautomation.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
    ],
    "runserver": lambda port: [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
}
PASSWORD = "migrate-alone-pw-9c1f"


def signed_in_admin_page(url: str) -> requests.Response:
    """/admin/ (the dashboard) as the superuser, signed in through the login form."""
    session = requests.Session()
    session.get(f"{url}/admin/login/", timeout=10)
    session.post(
        f"{url}/admin/login/",
        data={
            "username": "admin",
            "password": PASSWORD,
            "next": "/admin/",
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": f"{url}/admin/login/"},
        timeout=10,
    )
    return session.get(f"{url}/admin/", timeout=10, allow_redirects=False)


@pytest.mark.parametrize("server", SERVERS)
def test_migrate_alone_is_enough_to_serve_the_admin_and_the_api(tmp_path, server):
    """Django's convention: no createcachetable and no collectstatic before the first page."""
    project = copy_of_the_project(tmp_path / "project")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "STATIC_ROOT")}
    env.update(DJANGO_SETTINGS_MODULE="powerautomation.settings", DJANGO_SUPERUSER_PASSWORD=PASSWORD)

    def manage(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], env=env, cwd=project, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    manage("migrate", "--noinput")
    manage("createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com")
    key = manage("create_api_token", "admin").split()[0]

    port = free_port()
    with open(tmp_path / "server.log", "wb") as log:
        web = subprocess.Popen(
            SERVERS[server](port), env=env, cwd=project, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_for_port(port, timeout=30)
            url = f"http://127.0.0.1:{port}"
            login = requests.get(f"{url}/admin/login/", timeout=10)
            dashboard = signed_in_admin_page(url)
            status = requests.get(f"{url}/api/deployment/status", headers={"Authorization": f"Token {key}"}, timeout=10)
            css = requests.get(f"{url}/static/admin/css/base.css", timeout=10)
        finally:
            stop_process_group(web)
    output = (tmp_path / "server.log").read_text(errors="replace")
    assert not (project / "staticfiles").exists()
    assert login.status_code == 200, output
    assert dashboard.status_code == 200, output
    assert "Deploy" in dashboard.text
    assert status.status_code == 200, output
    assert css.status_code == 200, output


@pytest.mark.django_db(transaction=True)
def test_every_migrate_creates_the_cache_table_if_it_is_missing():
    """A database first migrated while CACHES pointed at Redis gets the table once it no
    longer does: not a one-time migration, but each `migrate`."""
    from django.core.cache import cache
    from django.core.management import call_command
    from django.db import connection

    if "django_cache" not in connection.introspection.table_names():
        pytest.skip("CACHES is not the database cache here (Redis)")
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE django_cache")

    call_command("migrate", verbosity=0)

    assert "django_cache" in connection.introspection.table_names()
    cache.set("after-migrate", "ok")
    assert cache.get("after-migrate") == "ok"
