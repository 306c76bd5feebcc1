import pytest

from deployments.models import CoordinationStatus as C, StageEvent, TargetStatus as T, TriggerSource
from deployments.services import coordination_start
from deployments.transitions import (
    COORDINATION_TRANSITIONS,
    TARGET_TRANSITIONS,
    InvalidTransition,
    transition,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def coordination(make_ssh_environment):
    make_ssh_environment("env_a", "./init_aicore.sh")
    return coordination_start(triggered_by=TriggerSource.COMMAND)


def test_every_status_has_a_row_in_the_tables():
    assert set(COORDINATION_TRANSITIONS) == set(C.values)
    assert set(TARGET_TRANSITIONS) == set(T.values)


def test_terminal_statuses_allow_no_further_move():
    for status in (C.COMPLETED, C.FAILED, C.CANCELLED):
        assert COORDINATION_TRANSITIONS[status] == set()
    for status in (T.SUCCEEDED, T.FAILED, T.CANCELLED, T.INTERRUPTED):
        assert TARGET_TRANSITIONS[status] == set()


def test_a_move_writes_exactly_one_event_with_old_and_new_status(coordination):
    before = StageEvent.objects.count()

    assert transition(coordination, C.EC2_DEPLOYING, message="go", data={"mode": "reported"})

    assert StageEvent.objects.count() == before + 1
    event = StageEvent.objects.latest("id")
    assert (event.old_status, event.new_status, event.message, event.data) == (
        C.PENDING,
        C.EC2_DEPLOYING,
        "go",
        {"mode": "reported"},
    )
    coordination.refresh_from_db()
    assert coordination.status == C.EC2_DEPLOYING
    assert coordination.started_at is not None


def test_a_move_the_table_forbids_raises_and_changes_nothing(coordination):
    before = StageEvent.objects.count()

    with pytest.raises(InvalidTransition):
        transition(coordination, C.COMPLETED)

    coordination.refresh_from_db()
    assert coordination.status == C.PENDING
    assert StageEvent.objects.count() == before


def test_the_second_of_two_racing_moves_loses_and_writes_nothing(coordination):
    from deployments.models import CoordinationTarget

    first = CoordinationTarget.objects.get()
    second = CoordinationTarget.objects.get()  # the same row, loaded by another worker
    assert transition(first, T.TRIGGERING)
    before = StageEvent.objects.count()

    assert transition(second, T.TRIGGERING) is False

    assert StageEvent.objects.count() == before
    assert second.status == T.PENDING  # the loser's copy is not changed in memory


def test_terminal_moves_stamp_finished_at(coordination):
    target = coordination.targets.get()
    transition(target, T.TRIGGERING)
    transition(target, T.FAILED, fields={"reason": "connection_failed"})
    target.refresh_from_db()
    assert target.finished_at is not None
    assert target.started_at is not None
    assert target.reason == "connection_failed"


def test_stage_events_cannot_be_changed_or_deleted_one_by_one(coordination):
    from deployments.models import AppendOnlyError

    event = StageEvent.objects.filter(coordination=coordination).first()
    event.message = "rewritten"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    assert StageEvent.objects.get(pk=event.pk).message != "rewritten"
    coordination.delete()  # deleting the whole coordination takes its events with it
    assert not StageEvent.objects.filter(pk=event.pk).exists()
