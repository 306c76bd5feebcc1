"""The admin in a real browser: headless Chromium (selenium) against the platform's web
process (gunicorn, as `make run` starts it), a real `qcluster` worker and a real sshd on
loopback. Each test leaves screenshots in test-artifacts/admin/."""

import shutil
import tempfile
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from accounts.roles import ADMIN, VIEWER
from deployments.models import Coordination, CoordinationStatus as C, TargetStatus as T, TriggerSource
from deployments.services import coordination_start
from environments.agent_tokens import new_token, token_hash
from environments.connectors.ssh import fingerprint, parse_host_key
from environments.models import RemoteEnvironment
from environments.services import environment_record_health
from tests.factories import PASSWORD, make_coordination, make_environment, make_staff

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "admin"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# Generous: a loaded 2-core machine; a wait ends as soon as its condition holds.
WAIT_SECONDS = 60

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


def open_browser(request, tag: str = ""):
    """Headless Chromium with a fresh profile; `driver.shot(name)` saves a screenshot
    named after the test (and `tag`, for a test's second browser)."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromium-driver are not installed (Debian packages; `make test-deps` installs them)")
    profile = tempfile.mkdtemp(prefix="pa-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--window-size=1440,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    prefix = request.node.name + (f"--{tag}" if tag else "")
    for old in ARTIFACTS.glob(f"{prefix}--*.png"):
        old.unlink()
    driver.shots = []

    def shot(name: str) -> Path:
        path = ARTIFACTS / f"{prefix}--{len(driver.shots) + 1:02d}-{name}.png"
        driver.save_screenshot(str(path))
        driver.shots.append(path)
        return path

    driver.shot = shot
    driver.profile = profile
    return driver


def close_browser(driver) -> None:
    try:
        driver.shot("end")
    finally:
        driver.quit()
        shutil.rmtree(driver.profile, ignore_errors=True)


@pytest.fixture
def browser(request):
    driver = open_browser(request)
    yield driver
    close_browser(driver)


@pytest.fixture
def viewer_browser(request):
    """A second browser, for a VIEWER watching what an ADMIN does in the first."""
    driver = open_browser(request, "viewer")
    yield driver
    close_browser(driver)


def wait_for(driver, condition, message: str, timeout: float = WAIT_SECONDS):
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition, message)


def sign_in(driver, base_url: str, username: str) -> None:
    driver.get(f"{base_url}/admin/login/?next=/admin/")
    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-pa-dashboard]"), "the dashboard after login")


def mark_page(driver) -> None:
    """A value only this page load has: still there later means the page never reloaded."""
    driver.execute_script("window.paPageMark = 'unreloaded';")


def page_was_not_reloaded(driver) -> bool:
    return driver.execute_script("return window.paPageMark;") == "unreloaded"


def test_an_admin_deploys_from_the_dashboard_and_watches_it_complete_live(
    browser, web_server, qcluster, sshd, make_ssh_environment, no_retry_delay
):
    script = sshd.script(
        "init_aicore.sh", 'echo "connecting $ENVIRONMENT_ID to $DEPLOYMENT_VERSION"\nsleep 3\necho done\n'
    )
    make_ssh_environment("mac_local_001", script)
    make_ssh_environment("linux_local_001", script)
    make_ssh_environment("docker_local_001", script)  # registered, not chosen
    make_staff("operator", ADMIN)

    sign_in(browser, web_server, "operator")
    form = browser.find_element(By.CSS_SELECTOR, "[data-pa-deploy-form]")
    for environment_id in ("mac_local_001", "linux_local_001"):
        form.find_element(By.CSS_SELECTOR, f'input[name="environments"][value="{environment_id}"]').click()
    assert not form.find_element(By.NAME, "all_environments").is_selected()  # ticking one unticks "all"
    form.find_element(By.NAME, "version").send_keys("v1.0.0")
    browser.shot("deploy-form")
    form.find_element(By.CSS_SELECTOR, "[data-pa-deploy]").click()

    # Back on the dashboard: the run is listed as running, then finishes, with no reload.
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".messagelist .success"), "the started message")
    coordination = Coordination.objects.get()
    assert coordination.triggered_by_user.username == "operator"
    mark_page(browser)
    running = f'[data-pa-fragment="active"] tr[data-coordination="{coordination.coordination_id}"]'
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, running), "the coordination listed as running")
    browser.shot("running")
    finished = f'[data-pa-fragment="recent"] tr[data-coordination="{coordination.coordination_id}"]'
    wait_for(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, f'{finished}[data-status="completed"]'),
        "the coordination completed on the dashboard",
    )
    assert page_was_not_reloaded(browser)
    assert "2 of 2 done" in browser.find_element(By.CSS_SELECTOR, finished).text
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-pa-fragment="active"] tr[data-coordination]')
    browser.shot("completed")

    # A health check finds one down: the health panel counts it and lists it first, still without a reload.
    down = RemoteEnvironment.objects.get(environment_id="linux_local_001")
    environment_record_health(environment_pk=down.pk, healthy=False, detail="HTTP 503 from the health check")
    unhealthy = '[data-pa-fragment="health"] [data-count="unhealthy"]'
    wait_for(
        browser,
        lambda d: d.find_element(By.CSS_SELECTOR, unhealthy).text == "1 unhealthy",
        "the unhealthy environment counted on the dashboard",
    )
    first = browser.find_element(By.CSS_SELECTOR, '[data-pa-fragment="health"] li[data-environment]')
    assert (first.get_attribute("data-environment"), first.get_attribute("data-health")) == (
        "linux_local_001",
        "unhealthy",
    )
    assert page_was_not_reloaded(browser)
    browser.shot("unhealthy")

    # Its page: each environment's outcome, exit code and output, and the timeline.
    browser.find_element(By.CSS_SELECTOR, f"{finished} a").click()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-pa-coordination]"), "the coordination page")
    rows = browser.find_elements(By.CSS_SELECTOR, "[data-pa-targets] tr[data-environment]")
    assert sorted((r.get_attribute("data-environment"), r.get_attribute("data-status")) for r in rows) == [
        ("linux_local_001", "succeeded"),
        ("mac_local_001", "succeeded"),
    ]
    assert "connecting mac_local_001 to v1.0.0" in browser.page_source
    assert "all 2 succeeded" in browser.find_element(By.CSS_SELECTOR, "[data-pa-events]").text
    assert coordination.targets.filter(status=T.SUCCEEDED).count() == 2


def test_a_coordination_page_follows_a_run_live_and_ends_it_failed(
    browser, web_server, qcluster, sshd, make_ssh_environment, no_retry_delay
):
    good = sshd.script("good.sh", "sleep 2\necho fine\n")
    bad = sshd.script("bad.sh", "sleep 3\necho 'ERROR: platform refused the token' >&2\nexit 4\n")
    make_ssh_environment("mac_local_001", good)
    make_ssh_environment("windows_local_001", bad)
    make_staff("operator", ADMIN)
    sign_in(browser, web_server, "operator")
    browser.find_element(By.CSS_SELECTOR, "[data-pa-deploy-form] [data-pa-deploy]").click()  # all enabled
    link = wait_for(
        browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".messagelist .success a"), "the started message"
    )[0]
    link.click()
    root = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-pa-coordination]"), "its page")[0]
    mark_page(browser)
    assert browser.find_element(By.CSS_SELECTOR, "[data-pa-cancel]").is_displayed()
    wait_for(browser, lambda d: root.get_attribute("data-status") == C.FAILED, "the coordination failed, live")
    wait_for(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, 'tr[data-environment="windows_local_001"][data-status="failed"]'),
        "the failed environment's row",
    )
    assert page_was_not_reloaded(browser)
    failed_row = browser.find_element(By.CSS_SELECTOR, 'tr[data-environment="windows_local_001"]')
    assert "4" in failed_row.find_elements(By.TAG_NAME, "td")[3].text  # environment, wave, outcome, exit code
    assert "ERROR: platform refused the token" in failed_row.text
    assert not browser.find_element(By.CSS_SELECTOR, "[data-pa-cancel]").is_displayed()
    assert browser.find_element(By.CSS_SELECTOR, "[data-pa-retry]").is_displayed()
    assert "1 of 2 environments failed" in browser.find_element(By.CSS_SELECTOR, "[data-pa-error]").text
    browser.shot("failed-live")


def test_a_viewer_sees_no_deploy_form_and_no_actions(browser, web_server):
    make_environment("linux_local_001")
    failed = make_coordination("deploy_20261123_101010_view", C.FAILED, {"linux_local_001": T.FAILED})
    make_staff("watcher", VIEWER)
    sign_in(browser, web_server, "watcher")
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-pa-deploy-form]")
    assert "may only watch" in browser.find_element(By.CSS_SELECTOR, ".pa-panel-deploy").text
    assert browser.find_elements(By.CSS_SELECTOR, '[data-pa-fragment="health"] [data-environment="linux_local_001"]')
    browser.shot("dashboard")

    browser.get(f"{web_server}/admin/environments/remoteenvironment/")
    assert "linux_local_001" in browser.page_source
    assert not browser.find_elements(By.NAME, "action")
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-pa-import], .object-tools .addlink")
    browser.shot("environments")

    browser.get(f"{web_server}/admin/deployments/coordination/{failed.pk}/change/")
    assert browser.find_elements(By.CSS_SELECTOR, "[data-pa-coordination]")
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-pa-cancel], [data-pa-retry]")
    assert not browser.find_elements(By.CSS_SELECTOR, "#content input[type=submit], #content button[type=submit]")


def test_an_admin_approves_a_changed_host_key_and_retries_the_failed_environment(
    browser, web_server, qcluster, sshd, make_ssh_environment, no_retry_delay
):
    script = sshd.script("init_aicore.sh", "echo connected\n")
    stale = Ed25519PrivateKey.generate().public_key()
    stale_key = stale.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    environment = make_ssh_environment("linux_local_001", script, host_key=stale_key)
    real_fingerprint = fingerprint(parse_host_key(sshd.host_public_key))
    make_staff("operator", ADMIN)

    sign_in(browser, web_server, "operator")
    browser.find_element(By.CSS_SELECTOR, "[data-pa-deploy-form] [data-pa-deploy]").click()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".messagelist .success a"), "started")[0].click()
    wait_for(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, "[data-pa-coordination][data-status='failed']"),
        "the run failed on the host key",
    )
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".pa-host-key-link"), "the host-key link")
    browser.shot("failed-on-host-key")
    browser.find_element(By.CSS_SELECTOR, ".pa-host-key-link").click()

    offer = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-pa-host-key-offer]"), "the offer")[0]
    assert "The host key changed" in offer.text
    assert offer.find_element(By.CSS_SELECTOR, "[data-pa-offered-fingerprint]").text == real_fingerprint
    browser.shot("offered-key")
    offer.find_element(By.CSS_SELECTOR, "[data-pa-approve-host-key]").click()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-pa-pinned-fingerprint]"), "pinned")
    assert browser.find_element(By.CSS_SELECTOR, "[data-pa-pinned-fingerprint]").text == real_fingerprint
    assert "approved by operator" in browser.find_element(By.ID, "host-key").text
    environment.refresh_from_db()
    assert environment.host_key.split()[:2] == sshd.host_public_key.split()[:2]
    assert environment.host_key_approved_by.username == "operator"
    browser.shot("approved")

    failed = Coordination.objects.get()
    browser.get(f"{web_server}/admin/deployments/coordination/{failed.pk}/change/")
    browser.find_element(By.CSS_SELECTOR, "[data-pa-retry] button").click()
    wait_for(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, "[data-pa-coordination][data-status='completed']"),
        "the retry completed",
    )
    retry = Coordination.objects.get(retry_of=failed)
    assert retry.status == C.COMPLETED
    assert (
        browser.find_element(By.CSS_SELECTOR, 'tr[data-environment="linux_local_001"]').get_attribute("data-status")
        == T.SUCCEEDED
    )


def selection_text(driver) -> str:
    return driver.find_element(By.CSS_SELECTOR, "[data-pa-deploy-form] [data-pa-selection]").text


def test_an_admin_deploys_by_tag_seeing_what_the_choice_selects_before_it_starts(
    browser, web_server, qcluster, sshd, make_ssh_environment, no_retry_delay
):
    # A file of its own: the sshd (and its scripts folder) is shared by the whole session.
    script = sshd.script("init_by-tag.sh", f'echo "$ENVIRONMENT_ID" >> "{sshd.scripts}/seen-by-tag"\n')
    make_ssh_environment("mac_local_001", script, tags=["mac", "team-a"])
    make_ssh_environment("mac_local_002", script, tags=["mac", "flaky"])
    make_ssh_environment("mac_local_off", script, tags=["mac"], enabled=False)
    make_ssh_environment("linux_local_001", script, tags=["linux"])
    make_staff("operator", ADMIN)

    sign_in(browser, web_server, "operator")
    form = browser.find_element(By.CSS_SELECTOR, "[data-pa-deploy-form]")
    wait_for(browser, lambda d: selection_text(d).startswith("Selects 3 environments"), "the count of all enabled")

    form.find_element(By.NAME, "tags").send_keys("mac")
    wait_for(
        browser,
        lambda d: selection_text(d) == "Selects 2 environments\nmac_local_001, mac_local_002",
        "the count of the tagged ones",
    )
    assert not form.find_element(By.NAME, "all_environments").is_selected()  # typing a tag unticks "all"
    form.find_element(By.NAME, "exclude_tags").send_keys("flakey")
    wait_for(browser, lambda d: "unknown tag(s): flakey" in selection_text(d), "the unknown tag named")
    browser.shot("unknown-tag")
    form.find_element(By.NAME, "exclude_tags").send_keys("\b\b")  # flakey -> flak
    form.find_element(By.NAME, "exclude_tags").send_keys("y")
    wait_for(browser, lambda d: selection_text(d) == "Selects 1 environment\nmac_local_001", "the count less flaky")
    form.find_element(By.CSS_SELECTOR, 'input[name="environments"][value="linux_local_001"]').click()
    wait_for(
        browser,
        lambda d: selection_text(d) == "Selects 2 environments\nlinux_local_001, mac_local_001",
        "the count with a ticked one",
    )
    browser.shot("selection")
    form.find_element(By.CSS_SELECTOR, "[data-pa-deploy]").click()

    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".messagelist .success"), "the started message")
    assert "2 environments deploying" in browser.find_element(By.CSS_SELECTOR, ".messagelist .success").text
    coordination = Coordination.objects.get()
    assert sorted(coordination.targets.values_list("environment_id", flat=True)) == [
        "linux_local_001",
        "mac_local_001",
    ]
    finished = f'[data-pa-fragment="recent"] tr[data-coordination="{coordination.coordination_id}"]'
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'{finished}[data-status="completed"]'), "completed")
    assert sorted((sshd.scripts / "seen-by-tag").read_text().splitlines()) == ["linux_local_001", "mac_local_001"]


def coordination_status(driver) -> str:
    return driver.find_element(By.CSS_SELECTOR, "[data-pa-coordination]").get_attribute("data-status")


def viewer_sees_no_approve_button(driver, web_server: str, coordination: Coordination) -> None:
    sign_in(driver, web_server, "watcher")
    running = driver.find_element(By.CSS_SELECTOR, '[data-pa-fragment="active"]')
    assert "awaiting approval after wave 1" in running.text
    assert not driver.find_elements(By.CSS_SELECTOR, "[data-pa-approve]")
    driver.shot("dashboard")
    driver.get(f"{web_server}/admin/deployments/coordination/{coordination.pk}/change/")
    assert coordination_status(driver) == C.AWAITING_APPROVAL
    assert "Awaiting an ADMIN's approval" in driver.find_element(By.CSS_SELECTOR, "[data-pa-rollout]").text
    assert not driver.find_elements(By.CSS_SELECTOR, "[data-pa-approve], [data-pa-cancel]")
    driver.shot("no-approve-button")


def test_an_admin_deploys_a_canary_first_approves_the_rest_and_a_viewer_cannot(
    browser, viewer_browser, web_server, qcluster, sshd, make_ssh_environment, no_retry_delay
):
    # A file of its own: the sshd (and its scripts folder) is shared by the whole session.
    script = sshd.script("init_canary.sh", f'sleep 2\necho "$ENVIRONMENT_ID" >> "{sshd.scripts}/seen-canary"\n')
    for environment_id in ("linux_local_001", "linux_local_002", "linux_local_003"):
        make_ssh_environment(environment_id, script)
    make_staff("operator", ADMIN)
    make_staff("watcher", VIEWER)

    # The Deploy form: one canary, then the rest once an ADMIN approves.
    sign_in(browser, web_server, "operator")
    browser.get(f"{web_server}/admin/deployments/coordination/deploy/")
    form = browser.find_element(By.CSS_SELECTOR, "[data-pa-deploy-form]")
    form.find_element(By.CSS_SELECTOR, "[data-pa-rollout-fields] summary").click()
    form.find_element(By.NAME, "batch_size").send_keys("1, 100%")
    Select(form.find_element(By.NAME, "pause_after_first")).select_by_value("approval")
    wait_for(
        browser,
        lambda d: selection_text(d).startswith("Selects 3 environments in 2 waves: 1, 2; approval after the first"),
        "the waves the rollout makes of the selection",
    )
    browser.shot("deploy-form")
    form.find_element(By.CSS_SELECTOR, "[data-pa-deploy]").click()

    # Its page: the canary runs, then the run waits for approval; the page follows live.
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".messagelist .success a"), "started")[0].click()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-pa-coordination]"), "its page")
    coordination = Coordination.objects.get()
    assert coordination.rollout["waves"] == [1, 2]
    mark_page(browser)
    approve = browser.find_element(By.CSS_SELECTOR, "[data-pa-approve]")
    if coordination_status(browser) != C.AWAITING_APPROVAL:
        assert not approve.is_displayed()
    wait_for(browser, lambda d: coordination_status(d) == C.AWAITING_APPROVAL, "awaiting approval, live")
    wait_for(browser, lambda d: approve.is_displayed(), "the Approve button shown live")
    assert page_was_not_reloaded(browser)
    assert browser.find_element(By.CSS_SELECTOR, "[data-pa-status]").text == "Awaiting approval"
    assert browser.find_element(By.CSS_SELECTOR, "[data-pa-cancel]").is_displayed()
    assert "after wave 1" in browser.find_element(By.CSS_SELECTOR, "[data-pa-awaiting]").text
    assert (sshd.scripts / "seen-canary").read_text().count("\n") == 1  # the canary alone ran
    browser.shot("awaiting-approval")

    # A VIEWER, in a browser of their own, sees the rollout and the status, and no Approve button.
    viewer_sees_no_approve_button(viewer_browser, web_server, coordination)

    # The ADMIN approves; the rest run and the page follows them to the end.
    approve.find_element(By.TAG_NAME, "button").click()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".messagelist .success"), "the approved message")
    assert "Approved" in browser.find_element(By.CSS_SELECTOR, ".messagelist .success").text
    mark_page(browser)
    wait_for(browser, lambda d: coordination_status(d) == C.COMPLETED, "the coordination completed, live")
    assert page_was_not_reloaded(browser)
    rows = browser.find_elements(By.CSS_SELECTOR, "[data-pa-targets] tr[data-environment]")
    outcomes = [
        (row.get_attribute("data-status"), row.find_element(By.CSS_SELECTOR, ".pa-wave-cell").text) for row in rows
    ]
    assert sorted(outcomes) == [
        ("succeeded", "1"),
        ("succeeded", "2"),
        ("succeeded", "2"),
    ]
    assert not browser.find_element(By.CSS_SELECTOR, "[data-pa-approve]").is_displayed()
    assert "by operator at" in browser.find_element(By.CSS_SELECTOR, "[data-pa-approval]").text
    browser.shot("completed")
    coordination.refresh_from_db()
    assert coordination.approved_by.username == "operator"
    assert sorted((sshd.scripts / "seen-canary").read_text().split()) == [
        "linux_local_001",
        "linux_local_002",
        "linux_local_003",
    ]


def test_an_admin_approves_from_the_live_dashboard_and_comes_back_to_it(browser, web_server):
    make_environment("linux_local_001")
    make_environment("linux_local_002")
    coordination = make_coordination(
        "deploy_20261205_101010_dash",
        C.AWAITING_APPROVAL,
        {"linux_local_001": T.SUCCEEDED, "linux_local_002": T.PENDING},
        wave=1,
        rollout={"pause_after_first_batch": "approval", "waves": [1, 1], "failure_budget": None},
    )
    make_staff("operator", ADMIN)
    sign_in(browser, web_server, "operator")
    row = f'[data-pa-fragment="active"] tr[data-coordination="{coordination.coordination_id}"]'
    assert "awaiting approval after wave 1" in browser.find_element(By.CSS_SELECTOR, row).text
    live = browser.find_element(By.CSS_SELECTOR, "[data-pa-dashboard] [data-pa-live]")
    wait_for(browser, lambda d: live.text.startswith("Live: updated"), "a poll of the live dashboard")
    browser.shot("awaiting-on-dashboard")

    browser.find_element(By.CSS_SELECTOR, f"{row} [data-pa-approve]").click()

    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".messagelist .success"), "the approved message")
    assert browser.current_url.rstrip("/").endswith("/admin")  # back on the dashboard
    assert f"Approved {coordination.coordination_id}" in browser.find_element(By.CSS_SELECTOR, ".messagelist").text
    coordination.refresh_from_db()
    assert (coordination.status, coordination.approved_by.username) == (C.LOCAL_DEPLOYING, "operator")


def agent_poll(base_url: str, token: str, environment_id: str) -> requests.Response:
    return requests.post(
        f"{base_url}/api/agent/poll",
        json={"environment_id": environment_id},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def test_an_admin_generates_an_agent_token_shown_once_that_the_agent_then_polls_with(browser, web_server):
    old = new_token()
    environment = make_environment(
        "mac_laptop_001", connection_method="polling", host="", username="", ssh_key_path="", agent_token=old
    )
    make_staff("operator", ADMIN)
    sign_in(browser, web_server, "operator")
    browser.get(f"{web_server}/admin/environments/remoteenvironment/{environment.pk}/change/")
    assert "agent never seen" in browser.find_element(By.CSS_SELECTOR, "[data-pa-agent]").text
    browser.shot("polling-environment")

    browser.find_element(By.CSS_SELECTOR, "[data-pa-generate-agent-token]").click()

    field = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-pa-agent-token]"), "the token page")[0]
    token = field.get_attribute("value")
    command = browser.find_element(By.CSS_SELECTOR, "[data-pa-agent-command]").text
    browser.shot("token-shown-once")
    assert token.startswith("pa_agent_")
    assert RemoteEnvironment.objects.get(pk=environment.pk).agent_token_hash == token_hash(token)
    assert f"--poll {web_server} --environment-id mac_laptop_001 --token-file agent-token.txt" in command
    # The token works against the platform's web process; the one it replaced no longer does.
    answer = agent_poll(web_server, token, "mac_laptop_001")
    assert answer.status_code == 200 and answer.json()["run"] is None, answer.text
    assert agent_poll(web_server, old, "mac_laptop_001").status_code == 401
    # Back on the environment's page: its agent was seen, and the token is not shown again.
    browser.find_element(By.LINK_TEXT, "Back to mac_laptop_001").click()
    wait_for(browser, lambda d: "agent last seen" in d.find_element(By.CSS_SELECTOR, "[data-pa-agent]").text, "seen")
    assert token not in browser.page_source


def test_a_viewer_follows_a_running_scripts_whole_output_live(
    browser, web_server, qcluster, sshd, make_ssh_environment, no_retry_delay
):
    script = sshd.script("chatty.sh", 'for i in $(seq 1 400); do echo "line $i of the init script"; sleep 0.01; done\n')
    make_ssh_environment("linux_local_001", script)
    make_staff("watcher", VIEWER)
    sign_in(browser, web_server, "watcher")
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND)
    browser.get(f"{web_server}/admin/deployments/coordination/{coordination.pk}/change/")
    link = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-pa-output-link]"), "the output link")
    link[0].click()
    root = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-pa-output]"), "the output page")[0]
    mark_page(browser)
    log = browser.find_element(By.CSS_SELECTOR, "[data-pa-output-text]")
    wait_for(browser, lambda d: "line 40 of" in log.text, "output while the script runs")
    browser.shot("live")
    wait_for(browser, lambda d: root.get_attribute("data-finished") == "true", "the run's end, live")
    lines = log.text.splitlines()
    assert lines == [f"line {i} of the init script" for i in range(1, 401)]
    assert page_was_not_reloaded(browser)
    # It scrolled along: the end is in view.
    assert browser.execute_script(
        "const e = arguments[0]; return e.scrollTop > 0 && e.scrollTop + e.clientHeight >= e.scrollHeight - 2;", log
    )
    download = browser.find_element(By.CSS_SELECTOR, "[data-pa-output-download]").get_attribute("href")
    assert download.endswith("?download=1")
