"""Waiting for jobs: synchronous ``local``, runners, and batches.

Synchronous ``local`` (spec §4.5, the semantics of Salt's own ``LocalClient``):

1. Publish without a jid of our own; the master assigns it. The bus keeps an
   index of recent returns by jid, so returns that arrive before the publish
   reply are not lost (:meth:`EventBus.watch_jid` replays them).
2. E = the minions in the reply. A return from outside E joins E.
3. Done when every minion of E returned.
4. Every T seconds with minions outstanding, ask them
   ``saltutil.find_job [jid]`` (with the caller's credentials). A minion that
   reports the job running gets a new deadline now + T; one that stays silent
   past its deadline is given up. The wait ends when nothing outstanding is
   running or within its deadline, or at publish + M.

Every timer comes from the injected clock and everything is released in
``finally``: a cancelled wait (client gone) leaves nothing behind.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from .master.exceptions import MasterTimeout


class JobTimeout(MasterTimeout):
    """A job's result did not arrive within its wait deadline."""


NO_MINIONS = "No minions matched the target. No command was sent, no jid was assigned."

_log = Logger()


class Publisher(Protocol):
    """The master operation the waits need."""

    async def publish(self, load: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Publish a job."""


class JidWatcher(Protocol):
    """The bus operation the waits need."""

    def watch_jid(self, jid: str, callback: Any) -> Any:
        """Follow the events of one jid; returns a stop function."""


class _Signal:
    """A re-armable wake-up for a waiting coroutine."""

    def __init__(self) -> None:
        self._deferred: defer.Deferred[None] | None = None
        self._pending = False
        self._clock: IReactorTime | None = None

    def set(self) -> None:
        if self._deferred is not None and not self._deferred.called:
            d, self._deferred = self._deferred, None
            # Wake the waiter on the next reactor turn, not inside the bus
            # read that brought the event: decoding a big return and
            # answering with it then never block the reactor in one stretch.
            if self._clock is not None:
                self._clock.callLater(0, _fire, d)
            else:
                d.callback(None)
        else:
            self._pending = True

    async def wait(self, clock: IReactorTime, timeout: float) -> None:
        if self._pending:
            self._pending = False
            return
        if timeout <= 0:
            return
        d: defer.Deferred[None] = defer.Deferred()
        self._deferred = d
        self._clock = clock

        def wake() -> None:
            if not d.called:
                d.callback(None)

        timer = clock.callLater(timeout, wake)
        try:
            await d
        finally:
            self._deferred = None
            self._pending = False
            if timer.active():
                timer.cancel()


def _fire(d: defer.Deferred[None]) -> None:
    if not d.called:
        d.callback(None)


def _is_return(tag: str, jid: str) -> str | None:
    for prefix in (f"salt/job/{jid}/ret/", f"syndic/job/{jid}/ret/"):
        if tag.startswith(prefix):
            return tag[len(prefix) :]
    return None


class JobWaiter:
    """Collects one job's returns and runs the find_job rounds.

    :param master: publishes the find_job probes.
    :param bus: follows the job's events.
    :param clock: time source.
    :param credentials: ``{"token": ...}`` or eauth credentials, for the probes.
    :param timeout: T, the per-minion wait.
    :param gather_job_timeout: G, how long a find_job round listens.
    :param max_wait: M, the cap on the whole wait.
    :param min_wait: with ``order_masters``, the syndic wait.
    """

    def __init__(
        self,
        master: Publisher,
        bus: JidWatcher,
        clock: IReactorTime,
        credentials: dict[str, Any],
        user: str,
        timeout: float,
        gather_job_timeout: float,
        max_wait: float,
        min_wait: float = 0.0,
    ) -> None:
        self.master = master
        self.bus = bus
        self.clock = clock
        self.credentials = credentials
        self.user = user
        self.timeout = timeout
        self.gather_job_timeout = gather_job_timeout
        self.max_wait = max_wait
        self.min_wait = min_wait
        self.returns: dict[str, dict[str, Any]] = {}
        self.expected: set[str] = set()
        self._signal = _Signal()
        self._arrivals: list[str] = []

    def _on_event(self, jid: str) -> Any:
        def callback(tag: str, data: dict[str, Any]) -> None:
            minion = _is_return(tag, jid)
            if minion is None:
                return
            minion = str(data.get("id", minion))
            if minion in self.returns:
                return
            self.returns[minion] = data
            self.expected.add(minion)
            self._arrivals.append(minion)
            self._signal.set()

        return callback

    def take_arrivals(self) -> list[str]:
        """Minions that returned since the last call, in arrival order."""
        arrivals, self._arrivals = self._arrivals, []
        return arrivals

    async def wait(self, jid: str, minions: list[str], started: float) -> AsyncIterator[str]:
        """Yield minion ids as they return, until the job is over.

        :param jid: the job.
        :param minions: the minions the publish reply named.
        :param started: when the job was published (clock seconds).
        """
        self.expected.update(minions)
        stop = self.bus.watch_jid(jid, self._on_event(jid))
        deadlines = {m: started + self.timeout for m in self.expected}
        next_probe = started + self.timeout
        give_up_at = started + self.max_wait
        try:
            while True:
                for minion in self.take_arrivals():
                    yield minion
                now = self.clock.seconds()
                outstanding = self.expected - set(self.returns)
                if not outstanding and now >= started + self.min_wait:
                    return
                if now >= give_up_at:
                    _log.warn(
                        "stopped waiting for job {jid} after {seconds:.0f}s; missing: {missing}",
                        jid=jid,
                        seconds=self.max_wait,
                        missing=sorted(outstanding),
                    )
                    return
                if not outstanding:
                    await self._signal.wait(self.clock, started + self.min_wait - now)
                    continue
                if now >= next_probe:
                    running = await self._find_job_round(jid, sorted(outstanding), give_up_at)
                    now = self.clock.seconds()
                    for minion in running:
                        deadlines[minion] = now + self.timeout
                    outstanding = self.expected - set(self.returns)
                    alive = {m for m in outstanding if deadlines.get(m, started + self.timeout) > now}
                    if not alive and not running:
                        for minion in self.take_arrivals():
                            yield minion
                        return
                    next_probe = now + self.timeout
                    continue
                await self._signal.wait(self.clock, min(next_probe, give_up_at) - now)
        finally:
            stop()

    async def _find_job_round(self, jid: str, minions: list[str], until: float | None = None) -> set[str]:
        """Ask *minions* whether they still run *jid*; the ones that do.

        The round listens for G seconds, but never past *until* (publish + M).
        """
        load = {
            "tgt": minions,
            "tgt_type": "list",
            "fun": "saltutil.find_job",
            "arg": [jid],
            "ret": "",
            "user": self.user,
            "kwargs": dict(self.credentials),
        }
        try:
            reply = await self.master.publish(load, timeout=self.gather_job_timeout)
        except defer.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed probe ends nothing by itself
            _log.warn("find_job for {jid} failed: {error}", jid=jid, error=str(exc))
            return set(minions)
        probe_jid = reply.get("jid")
        if not probe_jid:
            return set()
        running: set[str] = set()
        answered: set[str] = set()
        signal = _Signal()

        def on_probe(tag: str, data: dict[str, Any]) -> None:
            minion = _is_return(tag, probe_jid)
            if minion is None:
                return
            minion = str(data.get("id", minion))
            answered.add(minion)
            ret = data.get("return")
            retcode = data.get("retcode", 0)
            if (
                isinstance(ret, dict)
                and ret
                and ret.get("return", None) != {}
                and not (isinstance(retcode, int) and retcode > 0)
            ):
                running.add(minion)
            signal.set()

        stop = self.bus.watch_jid(probe_jid, on_probe)
        try:
            end = self.clock.seconds() + self.gather_job_timeout
            if until is not None:
                end = min(end, until)
            while not answered >= set(minions) and self.clock.seconds() < end:
                if set(self.returns) >= set(minions):
                    break
                await signal.wait(self.clock, end - self.clock.seconds())
        finally:
            stop()
        return running - set(self.returns)


async def wait_runner(bus: JidWatcher, clock: IReactorTime, jid: str, timeout: float) -> dict[str, Any]:
    """The data of ``salt/run/<jid>/ret`` (or ``salt/wheel/<jid>/ret``).

    :raises MasterTimeout: when no return arrives within *timeout*.
    """
    result: dict[str, Any] = {}
    signal = _Signal()

    def on_event(tag: str, data: dict[str, Any]) -> None:
        if tag.endswith("/ret") and not result:
            result["tag"] = tag
            result["data"] = data
            signal.set()

    stop = bus.watch_jid(jid, on_event)
    try:
        end = clock.seconds() + timeout
        while not result and clock.seconds() < end:
            await signal.wait(clock, end - clock.seconds())
    finally:
        stop()
    if not result:
        raise JobTimeout(f"No return for job {jid} within {timeout:g}s")
    return result


def batch_size(spec: str | int, total: int) -> int:
    """Salt's batch size rule: ``"N%"`` of *total* (at least 1) or ``N``."""
    text = str(spec).strip()
    if text.endswith("%"):
        share = float(text[:-1]) / 100.0 * total
        return max(1, math.ceil(share)) if share < 1 else int(share)
    return max(1, int(float(text)))
