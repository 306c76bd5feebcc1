"""An environment's whole output in the admin, through Django's test client: the link on
the coordination page, the live page, its JSON pieces and the download, for a VIEWER too;
a staff user without a role gets nothing. The browser test (test_browser.py) follows a
running script's output in Chromium."""

import pytest
from django.test import Client

from deployments.models import CoordinationTarget, TargetStatus as T
from deployments.script_output import output_append
from tests.factories import make_coordination, make_environment, make_staff

pytestmark = pytest.mark.django_db

SECRET = "p4ssw0rd-that-the-script-echoes"  # noqa: S105 (a test value)


@pytest.fixture
def running():
    make_environment("linux-1", password=SECRET, ssh_key_path="")
    coordination = make_coordination("deploy-admin-out", "local_deploying", {"linux-1": T.RUNNING})
    target = CoordinationTarget.objects.select_related("remote_environment").get()
    changes = output_append(target, f"hello <b>world</b>\npw {SECRET}\n", secrets=(SECRET,))
    CoordinationTarget.objects.filter(pk=target.pk).update(**changes)
    return coordination


def output_url(coordination) -> str:
    return f"/admin/deployments/coordination/{coordination.pk}/output/linux-1/"


def test_the_coordination_page_links_each_environment_to_its_whole_output(viewer, running):
    page = viewer.get(f"/admin/deployments/coordination/{running.pk}/change/").content.decode()
    assert f'href="{output_url(running)}"' in page and "Whole output (live)" in page
    assert f'href="{output_url(running)}?download=1"' in page


def test_a_viewer_follows_the_output_page_and_its_pieces(viewer, running):
    page = viewer.get(output_url(running))
    assert page.status_code == 200
    html = page.content.decode()
    assert "data-pa-output" in html and "console/output." in html
    assert SECRET not in html and "<b>world</b>" not in html  # the output comes as text, by the script

    first = viewer.get(output_url(running), {"offset": "0"}).json()
    assert first["text"] == "hello <b>world</b>\npw ***\n"
    assert first["complete"] is False and first["next_offset"] == len(first["text"].encode())
    rest = viewer.get(output_url(running), {"offset": str(first["next_offset"])}).json()
    assert rest["text"] == "" and rest["next_offset"] == first["next_offset"]
    assert viewer.get(output_url(running), {"offset": "-1"}).status_code == 400

    download = viewer.get(output_url(running), {"download": "1"})
    assert download["Content-Type"] == "text/plain; charset=utf-8"
    assert download["Content-Disposition"] == 'attachment; filename="deploy-admin-out-linux-1.log"'
    assert download.content.decode() == "hello <b>world</b>\npw ***\n"


@pytest.mark.parametrize("raw", ["\u00b2", "\u0661\u0662", "1" * 5000, "99999999999999999999"])
def test_an_offset_that_is_not_ascii_digits_or_too_long_is_a_400_not_a_500(viewer, running, raw):
    # str.isdigit() takes '²' and Arabic-Indic digits; int() refuses '²' and 4,300+ digits.
    assert viewer.get(output_url(running), {"offset": raw}).status_code == 400
    live = f"/admin/deployments/coordination/{running.pk}/live/"
    assert viewer.get(live, {"after": raw}).status_code == 400


def test_only_staff_with_a_role_may_read_output(running):
    roleless = Client()
    roleless.force_login(make_staff("nobody", None))
    assert roleless.get(output_url(running), {"download": "1"}).status_code in (302, 403)
    assert Client().get(output_url(running), {"download": "1"}).status_code == 302  # to the login page


def test_an_unknown_environment_is_404(viewer, running):
    url = f"/admin/deployments/coordination/{running.pk}/output/nope/"
    assert viewer.get(url).status_code == 404
