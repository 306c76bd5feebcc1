"""The web process `make run` starts (gunicorn) serves the admin, static files included."""

import subprocess
import sys

import pytest
import requests

from tests.services import ROOT, free_port, process_environment, wait_for_port

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def web(settings, tmp_path):
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"], cwd=ROOT, check=True
    )
    port = free_port()
    env = process_environment(settings.DATABASES["default"]["NAME"])
    gunicorn = (
        str(ROOT / ".venv" / "bin" / "gunicorn") if (ROOT / ".venv" / "bin" / "gunicorn").exists() else "gunicorn"
    )
    log = open(tmp_path / "gunicorn.log", "wb")
    process = subprocess.Popen(
        [gunicorn, "powerautomation.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def test_admin_login_page_and_its_stylesheet_are_served(web):
    page = requests.get(f"{web}/admin/login/", timeout=10)
    assert page.status_code == 200
    assert "PowerAutomation" in page.text
    css = requests.get(f"{web}/static/admin/css/base.css", timeout=10)
    assert css.status_code == 200
    assert "text/css" in css.headers["Content-Type"]
