"""Wait timelines of :mod:`saltapi_twisted.jobs` (spec §4.5, §4.6), on a fake clock.

The master and the bus are fakes: the publisher records every ``find_job``
probe and answers ``{"jid", "minions"}``; the bus keeps the return events it
has seen and replays them to a new watcher first, like
:meth:`EventBus.watch_jid`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet import defer, task
from twisted.python.failure import Failure

from saltapi_twisted.jobs import JobTimeout, JobWaiter, batch_size, wait_runner
from saltapi_twisted.master.exceptions import MasterTimeout, MasterUnavailable

JID = "20250101000000000001"
CREDS = {"token": "a" * 64}
_JID_OF = re.compile(r"^(?:salt|syndic)/(?:job|run|wheel)/([^/]+)/")


class FakeBus:
    """``watch_jid`` with replay of recorded returns, and ``emit``."""

    def __init__(self, clock: task.Clock | None = None) -> None:
        #: the test's clock: waiters wake on the next reactor turn, so an event advances it by 0
        self.clock = clock
        self.recorded: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self.watchers: dict[str, list[Callable[[str, dict[str, Any]], None]]] = {}

    def watch_jid(self, jid: str, callback: Callable[[str, dict[str, Any]], None]) -> Callable[[], None]:
        self.watchers.setdefault(jid, []).append(callback)
        for tag, data in list(self.recorded.get(jid, ())):
            callback(tag, data)

        def stop() -> None:
            callbacks = self.watchers.get(jid, [])
            if callback in callbacks:
                callbacks.remove(callback)
            if not callbacks:
                self.watchers.pop(jid, None)

        return stop

    def emit(self, tag: str, data: dict[str, Any]) -> None:
        match = _JID_OF.match(tag)
        assert match, tag
        jid = match.group(1)
        if "/ret" in tag:
            self.recorded.setdefault(jid, []).append((tag, data))
        for callback in list(self.watchers.get(jid, ())):
            callback(tag, data)
        if self.clock is not None:
            self.clock.advance(0)

    def ret(self, jid: str, minion: str, value: Any = True, **extra: Any) -> None:
        self.emit(f"salt/job/{jid}/ret/{minion}", {"id": minion, "jid": jid, "return": value, "retcode": 0, **extra})

    @property
    def watching(self) -> int:
        return sum(len(v) for v in self.watchers.values())


class FakePublisher:
    """Records the probes; probe answers are scheduled by :attr:`answer`.

    :param answer: ``(probe load, probe jid) -> None``; may emit probe
        returns on the bus (at once or later on the clock).
    """

    def __init__(self, bus: FakeBus, clock: task.Clock) -> None:
        self.bus = bus
        self.clock = clock
        self.loads: list[dict[str, Any]] = []
        self.timeouts: list[float | None] = []
        self.answer: Callable[[dict[str, Any], str], None] = lambda load, jid: None
        self.fail: BaseException | None = None

    async def publish(self, load: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        self.loads.append(load)
        self.timeouts.append(timeout)
        if self.fail is not None:
            raise self.fail
        probe_jid = f"2025010299999999{len(self.loads):04d}"
        self.answer(load, probe_jid)
        return {"jid": probe_jid, "minions": list(load["tgt"])}

    def probe_running(self, running: Callable[[str], bool], delay: float = 0.5) -> None:
        """Answer each probe after *delay*: running minions with job info, others ``{}``."""

        def answer(load: dict[str, Any], probe_jid: str) -> None:
            def emit() -> None:
                for minion in load["tgt"]:
                    value = {"jid": JID, "fun": "test.sleep", "pid": 1234} if running(minion) else {}
                    self.bus.ret(probe_jid, minion, value)

            if delay:
                self.clock.callLater(delay, emit)
            else:
                emit()

        self.answer = answer


class Harness:
    """A waiter and a consumer, driven by ``clock.advance``."""

    def __init__(
        self, timeout: float = 5.0, gather: float = 10.0, max_wait: float = 3600.0, min_wait: float = 0.0
    ) -> None:
        self.clock = task.Clock()
        self.bus = FakeBus(self.clock)
        self.master = FakePublisher(self.bus, self.clock)
        self.waiter = JobWaiter(
            self.master,
            self.bus,
            self.clock,
            dict(CREDS),
            "saltdev",
            timeout=timeout,
            gather_job_timeout=gather,
            max_wait=max_wait,
            min_wait=min_wait,
        )
        self.yielded: list[str] = []
        self.result: list[Any] = []
        self.deferred: defer.Deferred[Any] | None = None
        self.finished_at: float | None = None

    def start(self, minions: list[str], jid: str = JID, started: float | None = None) -> defer.Deferred[Any]:
        async def consume() -> None:
            async for minion in self.waiter.wait(jid, minions, self.clock.seconds() if started is None else started):
                self.yielded.append(minion)

        def done(result: Any) -> Any:
            self.finished_at = self.clock.seconds()
            self.result.append(result)
            return None

        self.deferred = defer.ensureDeferred(consume())
        self.deferred.addBoth(done)
        return self.deferred

    @property
    def done(self) -> bool:
        return bool(self.result)

    def probes(self) -> list[dict[str, Any]]:
        return [load for load in self.master.loads if load.get("fun") == "saltutil.find_job"]

    def advance_to(self, when: float, step: float = 0.25) -> None:
        while self.clock.seconds() < when - 1e-9:
            self.clock.advance(min(step, when - self.clock.seconds()))

    def assert_clean(self) -> None:
        assert self.clock.getDelayedCalls() == []
        assert self.bus.watching == 0


# ----------------------------------------------------------------------------
# JobWaiter


def test_all_minions_return_ends_the_wait() -> None:
    h = Harness()
    h.start(["m1", "m2"])
    assert not h.done
    h.clock.advance(1)
    h.bus.ret(JID, "m1", "one")
    assert h.yielded == ["m1"] and not h.done
    h.clock.advance(1)
    h.bus.ret(JID, "m2", "two")
    assert h.done and h.finished_at == 2
    assert h.yielded == ["m1", "m2"]
    assert {m: e["return"] for m, e in h.waiter.returns.items()} == {"m1": "one", "m2": "two"}
    assert h.probes() == []
    h.assert_clean()


def test_duplicate_return_counts_once() -> None:
    h = Harness()
    h.start(["m1", "m2"])
    h.bus.ret(JID, "m1", "first")
    h.bus.ret(JID, "m1", "second")
    assert h.yielded == ["m1"] and not h.done
    assert h.waiter.returns["m1"]["return"] == "first"
    h.bus.ret(JID, "m2")
    assert h.done
    h.assert_clean()


def test_return_before_the_waiter_starts_is_replayed() -> None:
    h = Harness()
    h.bus.ret(JID, "m1", "early")  # arrives before the publish reply is processed
    h.start(["m1", "m2"])
    assert h.yielded == ["m1"] and not h.done
    h.bus.ret(JID, "m2")
    assert h.done and h.yielded == ["m1", "m2"]
    h.assert_clean()


def test_every_return_replayed_means_done_at_once() -> None:
    h = Harness()
    h.bus.ret(JID, "m1")
    h.bus.ret(JID, "m2")
    h.start(["m1", "m2"])
    assert h.done and h.finished_at == 0
    assert sorted(h.yielded) == ["m1", "m2"]
    h.assert_clean()


def test_syndic_return_tag_counts() -> None:
    h = Harness()
    h.start(["m1"])
    h.bus.emit(f"syndic/job/{JID}/ret/m1", {"id": "m1", "return": 1})
    assert h.done and h.yielded == ["m1"]


def test_other_events_of_the_jid_are_ignored() -> None:
    h = Harness()
    h.start(["m1"])
    h.bus.emit(f"salt/job/{JID}/new", {"jid": JID, "minions": ["m1"]})
    h.bus.emit(f"salt/job/{JID}/prog/m1/0", {"id": "m1"})
    assert h.yielded == [] and not h.done
    h.bus.ret(JID, "m1")
    assert h.done


def test_minion_outside_the_expected_set_joins() -> None:
    h = Harness()
    h.start(["m1"])
    h.clock.advance(1)
    h.bus.ret(JID, "syndic-minion")
    assert h.yielded == ["syndic-minion"]
    assert "syndic-minion" in h.waiter.expected
    assert not h.done
    h.bus.ret(JID, "m1")
    assert h.done
    assert set(h.waiter.returns) == {"m1", "syndic-minion"}
    h.assert_clean()


def test_return_named_by_its_id_field() -> None:
    h = Harness()
    h.start(["m1"])
    h.bus.emit(f"salt/job/{JID}/ret/whatever", {"id": "m1", "return": 1})
    assert h.done and h.yielded == ["m1"]


def test_find_job_after_t_to_outstanding_minions_only_with_credentials() -> None:
    h = Harness(timeout=5, gather=10)
    h.master.probe_running(lambda m: False)
    h.start(["m1", "m2", "m3"])
    h.bus.ret(JID, "m2")
    h.advance_to(4.75)
    assert h.probes() == []
    h.advance_to(5)
    [probe] = h.probes()
    assert probe == {
        "tgt": ["m1", "m3"],
        "tgt_type": "list",
        "fun": "saltutil.find_job",
        "arg": [JID],
        "ret": "",
        "user": "saltdev",
        "kwargs": CREDS,
    }
    assert "jid" not in probe
    assert h.master.timeouts == [10]
    # neither answers "running": both are past their deadline, the wait ends
    h.advance_to(5.5)
    assert h.done and h.finished_at == 5.5
    assert set(h.waiter.returns) == {"m2"}
    h.assert_clean()


def test_find_job_carries_eauth_credentials() -> None:
    h = Harness()
    h.waiter.credentials = {"username": "u", "password": "p", "eauth": "pam"}
    h.master.probe_running(lambda m: False, delay=0)
    h.start(["m1"])
    h.advance_to(5)
    [probe] = h.probes()
    assert probe["kwargs"] == {"username": "u", "password": "p", "eauth": "pam"}
    assert h.done


def test_running_minion_keeps_the_wait_going_past_g() -> None:
    h = Harness(timeout=5, gather=10)
    h.master.probe_running(lambda m: True)
    h.start(["m1", "m2"])
    h.bus.ret(JID, "m1")
    h.advance_to(42)
    assert not h.done
    probes = h.probes()
    # one round every T (the answers come 0.5 s into each round)
    assert [p["tgt"] for p in probes] == [["m2"]] * len(probes)
    assert len(probes) >= 7
    h.bus.ret(JID, "m2", "slow")
    assert h.done and h.finished_at == 42
    assert h.waiter.returns["m2"]["return"] == "slow"
    h.assert_clean()


def test_probe_answered_before_its_watch_starts_is_replayed() -> None:
    h = Harness(timeout=5, gather=10)
    calls = {"n": 0}

    def running(minion: str) -> bool:
        calls["n"] += 1
        return calls["n"] <= 2

    h.master.probe_running(running, delay=0)  # answers land before watch_jid
    h.start(["m1"])
    h.advance_to(5)
    assert len(h.probes()) == 1 and not h.done
    h.advance_to(10)
    assert len(h.probes()) == 2 and not h.done
    h.advance_to(15)
    assert len(h.probes()) == 3
    assert h.done and h.finished_at == 15
    h.assert_clean()


def test_silent_minion_is_given_up_after_its_deadline() -> None:
    h = Harness(timeout=5, gather=10)
    # no probe answers at all
    h.start(["m1", "m2"])
    h.bus.ret(JID, "m1")
    h.advance_to(14.75)
    assert not h.done
    assert len(h.probes()) == 1
    h.advance_to(15)  # the round listened for G; m2's deadline (5) has passed
    assert h.done and h.finished_at == 15
    assert set(h.waiter.returns) == {"m1"}
    h.assert_clean()


def test_minion_reporting_not_running_is_given_up_at_once() -> None:
    h = Harness(timeout=5, gather=10)
    h.master.probe_running(lambda m: False, delay=1)
    h.start(["m1"])
    h.advance_to(6)
    assert h.done and h.finished_at == 6
    h.assert_clean()


def test_running_minion_keeps_a_silent_one_in_the_wait() -> None:
    h = Harness(timeout=5, gather=10)
    h.master.probe_running(lambda m: m == "busy")
    h.start(["busy", "silent"])
    h.advance_to(20)
    assert not h.done
    h.bus.ret(JID, "busy")
    # silent stays silent: given up once nothing outstanding runs
    h.advance_to(60)
    assert h.done
    assert set(h.waiter.returns) == {"busy"}
    h.assert_clean()


def test_return_during_a_probe_round_is_yielded() -> None:
    h = Harness(timeout=5, gather=10)
    h.start(["m1"])
    h.advance_to(6)  # a round is listening (no probe answers)
    assert len(h.probes()) == 1
    h.bus.ret(JID, "m1", "late")
    h.advance_to(15)
    assert h.done and h.yielded == ["m1"]
    h.assert_clean()


def test_failed_probe_counts_as_running() -> None:
    h = Harness(timeout=5, gather=10, max_wait=100)
    h.master.fail = MasterUnavailable("down")
    h.start(["m1"])
    h.advance_to(30)
    assert not h.done
    assert len(h.probes()) >= 5
    h.master.fail = None
    h.bus.ret(JID, "m1")
    assert h.done
    h.assert_clean()


def test_max_wait_caps_the_wait() -> None:
    h = Harness(timeout=5, gather=10, max_wait=12)
    h.master.probe_running(lambda m: True)
    h.start(["m1"])
    h.advance_to(11.75)
    assert not h.done
    h.advance_to(12)
    assert h.done and h.finished_at == 12
    assert h.waiter.returns == {}
    h.assert_clean()


def test_max_wait_cuts_a_probe_round_short() -> None:
    # the round starting at T=10 would listen until 20; publish + M is 12
    h = Harness(timeout=10, gather=10, max_wait=12)
    h.start(["m1"])
    h.advance_to(10)
    assert len(h.probes()) == 1
    h.advance_to(12)
    assert h.done and h.finished_at == 12
    h.assert_clean()


def test_max_wait_counts_from_the_publish() -> None:
    h = Harness(timeout=5, gather=10, max_wait=12)
    h.master.probe_running(lambda m: True)
    h.clock.advance(4)
    h.start(["m1"], started=0)  # published at 0, the reply was processed at 4
    h.advance_to(12)
    assert h.done and h.finished_at == 12


def test_min_wait_holds_the_result_for_syndics() -> None:
    h = Harness(min_wait=3)
    h.start(["m1"])
    h.bus.ret(JID, "m1")
    assert not h.done
    h.clock.advance(1)
    h.bus.ret(JID, "syndic-minion")
    h.advance_to(3)
    assert h.done and h.finished_at == 3
    assert set(h.waiter.returns) == {"m1", "syndic-minion"}
    h.assert_clean()


def test_cancel_releases_watches_and_timers() -> None:
    h = Harness()
    d = h.start(["m1", "m2"])
    h.bus.ret(JID, "m1")
    assert h.bus.watching == 1 and h.clock.getDelayedCalls()
    d.cancel()
    assert h.done and isinstance(h.result[0], Failure)
    h.result[0].trap(defer.CancelledError)
    h.assert_clean()
    h.bus.ret(JID, "m2")  # nothing listens any more
    assert h.yielded == ["m1"]


def test_cancel_during_a_probe_round_releases_the_probe_watch() -> None:
    h = Harness(timeout=5, gather=10)
    d = h.start(["m1"])
    h.advance_to(6)
    assert len(h.probes()) == 1
    assert h.bus.watching == 2  # the job and the probe
    d.cancel()
    h.result[0].trap(defer.CancelledError)
    h.assert_clean()


def test_cancel_during_the_probe_publish() -> None:
    h = Harness(timeout=5, gather=10)
    pending: list[defer.Deferred[Any]] = []

    async def slow_publish(load: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        h.master.loads.append(load)
        d: defer.Deferred[dict[str, Any]] = defer.Deferred()
        pending.append(d)
        return await d

    h.master.publish = slow_publish  # type: ignore[method-assign]
    d = h.start(["m1"])
    h.advance_to(5)
    assert len(pending) == 1
    d.cancel()
    h.result[0].trap(defer.CancelledError)
    h.assert_clean()


# ----------------------------------------------------------------------------
# wait_runner


def run_waiter(bus: FakeBus, clock: task.Clock, jid: str, timeout: float) -> list[Any]:
    out: list[Any] = []
    defer.ensureDeferred(wait_runner(bus, clock, jid, timeout)).addBoth(out.append)
    return out


def test_wait_runner_returns_the_ret_event() -> None:
    clock = task.Clock()
    bus = FakeBus(clock)
    out = run_waiter(bus, clock, JID, 30)
    bus.emit(f"salt/run/{JID}/new", {"fun": "runner.test.arg"})
    clock.advance(3)
    assert out == []
    bus.emit(f"salt/run/{JID}/ret", {"return": {"a": 1}, "success": True})
    assert out == [{"tag": f"salt/run/{JID}/ret", "data": {"return": {"a": 1}, "success": True}}]
    assert clock.getDelayedCalls() == [] and bus.watching == 0


def test_wait_runner_catches_a_ret_recorded_before_it_started() -> None:
    clock = task.Clock()
    bus = FakeBus(clock)
    bus.emit(f"salt/wheel/{JID}/ret", {"return": "done"})
    out = run_waiter(bus, clock, JID, 30)
    assert out == [{"tag": f"salt/wheel/{JID}/ret", "data": {"return": "done"}}]
    assert clock.getDelayedCalls() == [] and bus.watching == 0


def test_wait_runner_times_out() -> None:
    clock = task.Clock()
    bus = FakeBus(clock)
    out = run_waiter(bus, clock, JID, 30)
    clock.advance(29.9)
    assert out == []
    clock.advance(0.1)
    [failure] = out
    assert isinstance(failure, Failure)
    failure.trap(JobTimeout)
    assert isinstance(failure.value, MasterTimeout)
    assert JID in str(failure.value)
    assert clock.getDelayedCalls() == [] and bus.watching == 0


def test_wait_runner_cancel_releases_everything() -> None:
    clock = task.Clock()
    bus = FakeBus(clock)
    d = defer.ensureDeferred(wait_runner(bus, clock, JID, 30))
    d.cancel()
    failures: list[Failure] = []
    d.addErrback(failures.append)
    failures[0].trap(defer.CancelledError)
    assert clock.getDelayedCalls() == [] and bus.watching == 0


# ----------------------------------------------------------------------------
# batch_size (Salt's rule: a share below 1 rounds up, otherwise down)


@pytest.mark.parametrize(
    ("spec", "total", "expected"),
    [
        ("10%", 5, 1),  # 0.5 -> ceil
        ("50%", 5, 2),  # 2.5 -> int
        ("50%", 4, 2),
        ("100%", 5, 5),
        ("25%", 10, 2),
        ("1%", 1000, 10),
        ("1%", 50, 1),
        ("99%", 10, 9),
        (" 50% ", 10, 5),
        ("3", 5, 3),
        ("3", 2, 3),
        (3, 10, 3),
        ("1", 10, 1),
        ("0", 10, 1),  # never a window of 0
        ("10%", 0, 1),
    ],
)
def test_batch_size(spec: str | int, total: int, expected: int) -> None:
    assert batch_size(spec, total) == expected
