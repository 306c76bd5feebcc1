"""The coordinator's bookkeeping of detached SSH runs, in-process (no sshd, no worker): run
ids, the offset's compare-and-set, what the reaper leaves for re-attaching, adoption. The
whole life cycle against a real sshd and qcluster is in test_detached_e2e.py."""

from datetime import timedelta

import pytest
from django.utils import timezone

from deployments.leases import lease_reap
from deployments.models import CoordinationTarget, RunLease, StageEvent, TargetStatus as T
from deployments.runner.detached import run_id_for, runs_detached, targets_adopt
from deployments.runner.output import OutputBook
from deployments.script_output import output_read
from environments.config import DeploymentDefaults
from environments.connectors.ssh_runs import check_run_id
from tests.factories import make_coordination, make_environment

pytestmark = pytest.mark.django_db


def running_coordination(*environments: str, status=T.RUNNING):
    for environment_id in environments:
        make_environment(environment_id)
    return make_coordination("deploy_detached", "local_deploying", dict.fromkeys(environments, status), wave=1)


def test_a_run_id_is_unique_even_for_a_coordination_id_given_again():
    """A coordination id can come back (--coordination-id, another platform, another
    database): its run must never find an old run's directory and take its end for its own."""
    coordination = running_coordination("env_a")
    coordination.coordination_id = "c" * 100  # the longest there is
    target = coordination.targets.get()
    target.pk = 10**10 - 1
    first, second = run_id_for(coordination, target), run_id_for(coordination, target)
    assert first != second
    assert check_run_id(first) == first and len(first) <= 128


def test_ssh_environments_run_detached_unless_they_or_ssh_settings_say_not():
    ssh = make_environment("ssh_env")
    http = make_environment(
        "http_env", connection_method="http_api", api_endpoint="http://127.0.0.1:9/", api_token="t0ken-value"
    )
    default = DeploymentDefaults()
    attached = DeploymentDefaults(detach=False)
    assert runs_detached(ssh, default) and not runs_detached(ssh, attached)
    assert not runs_detached(http, default)
    ssh.detach = True
    assert runs_detached(ssh, attached)
    ssh.detach = False
    assert not runs_detached(ssh, default)


def test_a_worker_whose_offset_was_moved_by_another_records_nothing_more():
    coordination = running_coordination("env_a")
    target = coordination.targets.select_related("remote_environment").get()
    CoordinationTarget.objects.filter(pk=target.pk).update(remote_run_id="r.1.ab")
    target.refresh_from_db()
    presumed_dead, adopter = OutputBook(), OutputBook()
    adopter_target = CoordinationTarget.objects.select_related("remote_environment").get(pk=target.pk)

    adopter.add(target.pk, "one\n", end_offset=4)
    adopter.flush({target.pk: adopter_target})
    presumed_dead.add(target.pk, "one\n", end_offset=4)  # the same bytes, read by the old worker
    presumed_dead.flush({target.pk: target})
    presumed_dead.add(target.pk, "two\n", end_offset=8)
    presumed_dead.flush({target.pk: target})

    assert output_read(target).text == "one\n"
    assert CoordinationTarget.objects.get(pk=target.pk).remote_offset == 4
    assert target.pk in presumed_dead.lost and target.pk not in adopter.lost
    adopter.add(target.pk, "two\n", end_offset=8)
    adopter.flush({target.pk: adopter_target})
    assert output_read(target).text == "one\ntwo\n"


def test_the_reaper_leaves_detached_runs_running_for_a_worker_to_re_attach_and_interrupts_attached_ones():
    coordination = running_coordination("detached_env", "attached_env")
    dead = RunLease.objects.create(
        coordination=coordination, owner="gone:1", is_lead=True, expires_at=timezone.now() - timedelta(minutes=1)
    )
    coordination.targets.update(lease=dead)
    coordination.targets.filter(environment_id="detached_env").update(
        remote_run_id="deploy_detached.1.ab", remote_offset=7
    )

    assert lease_reap(lease=dead)

    detached = coordination.targets.get(environment_id="detached_env")
    attached = coordination.targets.get(environment_id="attached_env")
    assert (detached.status, detached.lease, detached.remote_offset) == (T.RUNNING, None, 7)
    assert attached.status == T.INTERRUPTED


def test_of_two_tasks_adopting_the_same_run_one_gets_it():
    coordination = running_coordination("env_a", "env_b")
    coordination.targets.update(remote_run_id="deploy_detached.x.ab")
    coordination.targets.filter(environment_id="env_b").update(remote_run_id="")  # attached: not adoptable
    first = RunLease.objects.create(
        coordination=coordination, owner="w:1", expires_at=timezone.now() + timedelta(minutes=1)
    )
    second = RunLease.objects.create(
        coordination=coordination, owner="w:2", expires_at=timezone.now() + timedelta(minutes=1)
    )

    taken = targets_adopt(coordination, wave=1, lease=first)
    assert [target.environment_id for target in taken] == ["env_a"]
    assert targets_adopt(coordination, wave=1, lease=second) == []
    assert coordination.targets.get(environment_id="env_a").lease == first
    event = StageEvent.objects.filter(target__environment_id="env_a", message__startswith="re-attaching").get()
    assert event.data["worker"] == "w:1"
