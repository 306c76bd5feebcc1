"""Pruning while a deployment runs (a real qcluster process, a real sshd) and while the API
is read: the running coordination loses nothing and nobody reading sees an error. On
both passes: what matters here is how each database lets a prune, a worker and readers at
the same rows at once."""

import threading
import time
from io import StringIO

import pytest
from django.core.management import call_command

from accounts.roles import VIEWER
from deployments.models import Coordination, CoordinationStatus as C, StageEvent, TargetStatus as T, TriggerSource
from deployments.services import coordination_start
from tests.deployments.test_retention import old_coordination, remaining
from tests.factories import make_user, token_client
from tests.support.processes import in_thread, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SCRIPT = 'for i in 1 2 3 4 5 6; do echo "step $i"; sleep 0.25; done\n'


def read_the_api(client, coordination_id: str, stop: threading.Event, answers: list[tuple[str, int]]) -> None:
    paths = [
        "/api/deployment/status",
        "/api/deployment/history",
        f"/api/deployment/coordinations/{coordination_id}/",
        f"/api/deployment/coordinations/{coordination_id}/events/",
    ]
    while not stop.is_set():
        for path in paths:
            answers.append((path, client.get(path).status_code))
        time.sleep(0.2)  # within the token throttle (600 a minute)


def chain(events: list[StageEvent]) -> list[str]:
    """The statuses one row went through, as its events tell them; a missing event breaks
    the chain (an event's old status is the previous one's new status)."""
    statuses = [events[0].old_status]
    for event in events:
        assert event.old_status == statuses[-1], [(e.old_status, e.new_status) for e in events]
        statuses.append(event.new_status)
    return statuses


def test_pruning_during_a_deployment_and_api_reads_changes_nothing_for_them(sshd, make_ssh_environment, qcluster):
    make_ssh_environment("env_live", sshd.script("slow.sh", SCRIPT))
    for days_ago in range(10, 16):
        old_coordination(f"deploy_live_{days_ago}", {"env_live": T.SUCCEEDED}, days_ago=days_ago)
        old_coordination(f"deploy_retired_{days_ago}", {"env_retired": T.FAILED}, status=C.FAILED, days_ago=days_ago)
    reader = token_client(make_user("watcher", VIEWER))

    live = coordination_start(triggered_by=TriggerSource.COMMAND, coordination_id="deploy_live_now")
    stop, answers = threading.Event(), []
    thread = in_thread(read_the_api, client=reader, coordination_id=live.coordination_id, stop=stop, answers=answers)
    seen_while_running = set()
    try:
        deadline = time.monotonic() + 60
        while not Coordination.objects.get(pk=live.pk).is_terminal and time.monotonic() < deadline:
            call_command("prune_history", "--older-than", "0s", "--keep-last", "1", "--json", stdout=StringIO())
            seen_while_running.add(live.targets.get().status)
        wait_until(lambda: Coordination.objects.get(pk=live.pk).is_terminal, 30, "the deployment to end")
        call_command("prune_history", "--older-than", "0s", "--keep-last", "1")
    finally:
        stop.set()
        thread.join(10)

    assert T.RUNNING in seen_while_running, (seen_while_running, qcluster.output())
    assert [(path, code) for path, code in answers if code != 200] == []
    assert {path for path, _ in answers} >= {"/api/deployment/status", "/api/deployment/history"}
    live.refresh_from_db()
    assert live.status == C.COMPLETED, qcluster.output()
    target = live.targets.get()
    assert (target.status, target.exit_code) == (T.SUCCEEDED, 0)
    assert target.output_tail.split() == [word for i in range(1, 7) for word in ("step", str(i))]
    events = list(StageEvent.objects.filter(coordination=live).order_by("id"))
    coordination_chain = chain([event for event in events if event.target_id is None and event.old_status])
    assert (coordination_chain[0], coordination_chain[-1]) == (C.PENDING, C.COMPLETED)
    assert chain([event for event in events if event.target_id == target.pk]) == [
        T.PENDING,
        T.TRIGGERING,
        T.RUNNING,
        T.SUCCEEDED,
    ]
    # The old history went, but each environment's newest finished coordination stays.
    assert remaining() == {"deploy_live_now", "deploy_retired_10"}
