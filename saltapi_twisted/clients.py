"""The netapi clients, run over the master link.

Each validated chunk (:mod:`saltapi_twisted.lowstate`) is turned into one or
more credentialed master requests and, for the synchronous clients, a wait
on the event bus (:mod:`saltapi_twisted.jobs`).

A ``local_batch`` chunk yields one entry per minion return; the dispatcher
flattens it into the response (:class:`Entries`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from .config import ApiConfig
from .jobs import NO_MINIONS, JobWaiter, batch_size, wait_runner
from .lowstate import local_publish_load, runner_load, wheel_load
from .master.client import MasterClient
from .master.eventbus import EventBus
from .master.exceptions import AuthenticationFailed, AuthorizationFailed, MasterRequestError

#: Picks the minions of ``local_subset`` (the OS generator, like every choice this package makes).
_RANDOM = secrets.SystemRandom()

FAILED_TO_AUTHENTICATE = "Failed to authenticate"


class Entries(list[Any]):
    """Several response entries produced by one chunk (``local_batch``)."""


def _credentials(chunk: dict[str, Any]) -> dict[str, Any]:
    if "token" in chunk:
        return {"token": chunk["token"]}
    return {k: chunk[k] for k in ("eauth", "username", "password") if k in chunk}


def _user(chunk: dict[str, Any]) -> str:
    return str(chunk.get("username", "saltapi"))


class ClientRunner:
    """Runs chunks.

    :param master: the master client.
    :param bus: the event bus.
    :param clock: time source.
    :param config: the API configuration (master options inside).
    """

    _log = Logger()

    def __init__(self, master: MasterClient, bus: EventBus, clock: IReactorTime, config: ApiConfig) -> None:
        self.master = master
        self.bus = bus
        self.clock = clock
        self.config = config
        self.settings = config.master
        self._publish_gate = defer.DeferredSemaphore(config.max_concurrent_publishes)
        self._handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
            "local": self.local,
            "local_async": self.local_async,
            "local_batch": self.local_batch,
            "local_subset": self.local_subset,
            "runner": self.runner,
            "runner_async": self.runner_async,
            "wheel": self.wheel,
            "wheel_async": self.wheel_async,
        }

    async def run(self, chunk: dict[str, Any]) -> Any:
        """Run one validated chunk; its response entry (or :class:`Entries`)."""
        return await self._handlers[chunk["client"]](chunk)

    async def _publish(self, load: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        await self._publish_gate.acquire()
        try:
            return await self.master.publish(load, timeout=self.config.master_request_timeout)
        finally:
            self._publish_gate.release()

    # ------------------------------------------------------------------
    # local family

    def _waiter(self, chunk: dict[str, Any]) -> JobWaiter:
        timeout = float(chunk.get("timeout") or self.settings.timeout)
        return JobWaiter(
            self.master,
            self.bus,
            self.clock,
            _credentials(chunk),
            _user(chunk),
            timeout=timeout,
            gather_job_timeout=self.settings.gather_job_timeout,
            max_wait=self.config.sync_wait_max,
            min_wait=self.settings.syndic_wait if self.settings.order_masters else 0.0,
        )

    async def _local_sync(self, chunk: dict[str, Any]) -> dict[str, dict[str, Any]] | str:
        """Publish and wait; the return events by minion, or the no-match text."""
        load = local_publish_load(chunk)
        started = self.clock.seconds()
        reply = await self._publish(load)
        if not reply.get("jid") or not reply.get("minions"):
            return NO_MINIONS
        waiter = self._waiter(chunk)
        async for _minion in waiter.wait(str(reply["jid"]), list(reply["minions"]), started):
            pass
        return waiter.returns

    async def local(self, chunk: dict[str, Any]) -> Any:
        """``local``: ``{minion: return}`` for the minions that returned."""
        returns = await self._local_sync(chunk)
        if isinstance(returns, str):
            return returns
        return {minion: event.get("return") for minion, event in returns.items()}

    async def local_async(self, chunk: dict[str, Any]) -> Any:
        """``local_async``: ``{"jid", "minions"}``, or ``{}`` when nothing matched."""
        reply = await self._publish(local_publish_load(chunk))
        if not reply.get("jid"):
            return {}
        return {"jid": reply["jid"], "minions": list(reply.get("minions") or [])}

    async def local_subset(self, chunk: dict[str, Any]) -> Any:
        """``local_subset``: run on *subset* random minions that have ``fun``."""
        probe = {k: v for k, v in chunk.items() if k not in ("subset", "jid", "arg", "kwarg", "ret", "full_return")}
        probe.update({"fun": "sys.list_functions", "arg": [], "client": "local"})
        functions = await self._local_sync(probe)
        if isinstance(functions, str):
            return functions
        fun = chunk["fun"]
        wanted = fun if isinstance(fun, list) else [fun]
        candidates = [
            minion
            for minion, event in functions.items()
            if isinstance(event.get("return"), list) and all(f in event["return"] for f in wanted)
        ]
        if not candidates:
            return NO_MINIONS
        chosen = _RANDOM.sample(candidates, min(int(chunk.get("subset", 1)), len(candidates)))
        run = {k: v for k, v in chunk.items() if k != "subset"}
        run.update({"tgt": sorted(chosen), "tgt_type": "list"})
        return await self.local(run)

    async def local_batch(self, chunk: dict[str, Any]) -> Entries:
        """``local_batch``: a sliding window of at most ``batch`` minions.

        Minions are discovered with ``test.ping``; each window slot publishes
        to one list of minions with the caller's credentials; one entry per
        minion return, in arrival order.
        """
        probe = {k: v for k, v in chunk.items() if k not in ("batch", "batch_wait", "jid", "arg", "kwarg", "ret")}
        probe.update({"fun": "test.ping", "arg": [], "client": "local"})
        discovered = await self._local_sync(probe)
        entries = Entries()
        if isinstance(discovered, str):
            entries.append(discovered)
            return entries
        minions = sorted(m for m, event in discovered.items() if not event.get("failed"))
        size = batch_size(chunk.get("batch", "1"), len(minions))
        wait = float(chunk.get("batch_wait") or 0.0)
        pending = list(minions)
        active: set[str] = set()
        done = defer.DeferredQueue()  # type: ignore[var-annotated]
        running: list[defer.Deferred[Any]] = []

        async def run_slice(targets: list[str]) -> None:
            one = {k: v for k, v in chunk.items() if k not in ("batch", "batch_wait")}
            one.update({"tgt": targets, "tgt_type": "list", "client": "local"})
            try:
                returns = await self._local_sync(one)
            except MasterRequestError as exc:
                returns = {}
                done.put(("error", exc))
            if isinstance(returns, str):
                returns = {}
            for minion in targets:
                event = returns.get(minion)
                done.put((minion, {minion: event.get("return") if event else {}}))

        try:
            while pending or active:
                room = size - len(active)
                if pending and room > 0:
                    targets, pending = pending[:room], pending[room:]
                    active.update(targets)
                    running.append(defer.ensureDeferred(run_slice(targets)))
                    continue
                minion, entry = await done.get()
                if minion == "error":
                    raise entry
                active.discard(minion)
                entries.append(entry)
                if wait:
                    await _sleep(self.clock, wait)
        finally:
            for d in running:
                if not d.called:
                    d.cancel()
        return entries

    # ------------------------------------------------------------------
    # runner and wheel

    async def runner(self, chunk: dict[str, Any]) -> Any:
        """``runner``: the runner's return (the whole event with ``full_return``)."""
        reply = await self.master.runner(runner_load(chunk), timeout=self.config.master_request_timeout)
        timeout = float(chunk.get("timeout") or self.settings.rest_timeout)
        event = await wait_runner(self.bus, self.clock, str(reply["jid"]), timeout)
        if chunk.get("full_return"):
            return event
        return event["data"].get("return")

    async def runner_async(self, chunk: dict[str, Any]) -> Any:
        """``runner_async``: ``{"tag", "jid"}``."""
        reply = await self.master.runner(runner_load(chunk), timeout=self.config.master_request_timeout)
        return {"tag": reply.get("tag", f"salt/run/{reply['jid']}"), "jid": reply["jid"]}

    async def wheel(self, chunk: dict[str, Any]) -> Any:
        """``wheel``: ``{"tag", "data"}`` with the function's return."""
        timeout = max(1.0, float(chunk.get("timeout") or self.settings.rest_timeout))
        reply = await self.master.wheel(wheel_load(chunk), timeout=timeout)
        return {"tag": reply.get("tag"), "data": reply.get("data")}

    async def wheel_async(self, chunk: dict[str, Any]) -> Any:
        """``wheel_async``: ``{"tag", "jid"}``.

        The master runs wheel functions inside its request handler, so the
        answer comes when the function is done.
        """
        timeout = max(1.0, float(chunk.get("timeout") or self.settings.rest_timeout))
        reply = await self.master.wheel(wheel_load(chunk), timeout=timeout)
        data = reply.get("data") or {}
        jid = data.get("jid") or str(reply.get("tag", "")).rsplit("/", 1)[-1]
        return {"tag": reply.get("tag", f"salt/wheel/{jid}"), "jid": jid}


async def _sleep(clock: IReactorTime, seconds: float) -> None:
    d: defer.Deferred[None] = defer.Deferred()
    timer = clock.callLater(seconds, d.callback, None)
    try:
        await d
    finally:
        if timer.active():
            timer.cancel()


def is_auth_failure(exc: BaseException) -> bool:
    """Whether *exc* is the master refusing credentials or permission."""
    return isinstance(exc, (AuthenticationFailed, AuthorizationFailed))
