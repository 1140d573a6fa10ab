"""``qilu run`` starts a failed child again (ops/demo.py :class:`Restarts`): the delays and
when it gives up, without processes."""

from __future__ import annotations

from ops.demo import Restarts


def test_quick_failures_double_the_delay_then_give_up() -> None:
    policy = Restarts(quick_s=60.0, limit=5, first_delay_s=1.0, max_delay_s=30.0)
    delays = [policy.after_failure(ran_s=2.0) for _ in range(5)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert policy.after_failure(ran_s=2.0) is None  # the 6th quick failure in a row


def test_the_delay_is_bounded() -> None:
    policy = Restarts(limit=10, first_delay_s=1.0, max_delay_s=30.0)
    delays = [policy.after_failure(ran_s=0.5) for _ in range(8)]
    assert delays[-3:] == [30.0, 30.0, 30.0]


def test_a_long_run_starts_the_count_again() -> None:
    policy = Restarts(quick_s=60.0, limit=2)
    assert policy.after_failure(ran_s=1.0) == 1.0
    assert policy.after_failure(ran_s=1.0) == 2.0
    # it ran for ten minutes before this failure (a stall watchdog's exit, a kill): not a loop
    assert policy.after_failure(ran_s=600.0) == 1.0
    assert policy.after_failure(ran_s=1.0) == 2.0
    assert policy.after_failure(ran_s=1.0) is None
