"""The minions/jobs view of the formatted websocket streams (pure, bounded).

``/formatted_events/<token>`` and ``/ws?format_events`` do not relay raw
events: they keep a view of the minions and the jobs seen on the bus, and
send the part of the view an event changed (rest_tornado's ``SaltInfo``)::

    {"minions": {<id>: {"id": <id>, "grains": {...}}}}     /formatted_events
    {"minions": [{"id": <id>, "grains": {...}}, ...]}       /ws?format_events
    {"jobs": {<jid>: {"jid", "start_time", "fun", "tgt", "tgt_type", "state",
                      "minions": {<id>: {"return", "retcode", "success"}}}}}

Transitions:

* ``salt/job/<jid>/new``: the job enters the view, ``state: "running"``,
  each targeted minion ``{"success": false}``; jobs are sent.
* ``salt/job/<jid>/ret/<id>``: the minion's ``return``, ``retcode`` and
  ``success`` are recorded (a missing ``success`` is read from ``retcode``,
  else taken as true; a missing ``retcode`` is ``null``); the job becomes
  ``"complete"`` once every minion has ``success: true``; jobs are sent. A
  ``grains.items`` return also sets that minion's grains, and minions are
  sent after the jobs. A return whose ``new`` was missed still enters the
  view.
* ``salt/key`` with ``act`` ``accept`` / ``delete``: the minion enters or
  leaves the view; minions are sent.
* ``salt/presence/present`` (``present``) and ``salt/presence/change``
  (``new``, ``lost``): lost minions leave, new ones enter and their grains
  are to be fetched (:attr:`Changes.fetch_grains`); minions are sent when
  something changed.

A minion whose grains are not known yet is ``{"id": <id>}`` (as rest_tornado).
At most ``max_jobs`` jobs are kept: the oldest complete job is evicted first,
else the oldest job. Malformed events are ignored, never raised.

Each job and minion is encoded once per change and the cached JSON is
reused by every later frame, so a frame costs a join, not a full dump.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .negotiation import to_plain

MAX_JOBS = 1000
_UNSERIALISABLE = "<unserialisable return>"


@dataclass
class Changes:
    """What one event changed: which parts to send, which grains to fetch."""

    jobs: bool = False
    minions: bool = False
    fetch_grains: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.jobs or self.minions or bool(self.fetch_grains)


def _dumps(value: Any) -> str:
    return json.dumps(to_plain(value), ensure_ascii=False, separators=(", ", ": "))


def _str_list(value: Any) -> list[str]:
    if not isinstance(value, (list, tuple, set, frozenset)):
        return []
    return [item for item in value if isinstance(item, str) and item]


class FormattedView:
    """The view one formatted stream maintains.

    :param max_jobs: the most jobs kept (and sent in one frame).
    :param minions_as_list: send ``minions`` as a list (``/ws?format_events``).
    """

    def __init__(self, max_jobs: int = MAX_JOBS, minions_as_list: bool = False) -> None:
        if max_jobs < 1:
            raise ValueError("max_jobs must be at least 1")
        self.max_jobs = max_jobs
        self.minions_as_list = minions_as_list
        #: minion id -> {"grains": ...} (no key until the grains are known)
        self.minions: dict[str, dict[str, Any]] = {}
        #: jid -> job, oldest first
        self.jobs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.evicted = 0
        self._job_json: dict[str, str] = {}
        self._minion_json: dict[str, str] = {}

    # ------------------------------------------------------------------
    # transitions

    def process(self, tag: str, data: Any) -> Changes:
        """Apply one bus event; what it changed."""
        changes = Changes()
        if not isinstance(tag, str) or not isinstance(data, Mapping):
            return changes
        parts = tag.split("/", 4)
        if len(parts) < 2 or parts[0] != "salt":
            return changes
        if parts[1] == "job" and len(parts) >= 4:
            jid = parts[2]
            if not jid:
                return changes
            if parts[3] == "new" and len(parts) == 4:
                self._new_job(jid, data)
                changes.jobs = True
            elif parts[3] == "ret" and len(parts) == 5 and parts[4]:
                mid = parts[4]
                self._job_return(jid, mid, data)
                changes.jobs = True
                if data.get("fun") == "grains.items":
                    self._set_grains(mid, data.get("return"))
                    changes.minions = True
        elif tag == "salt/key":
            self._key(data, changes)
        elif parts[1] == "presence":
            self._presence(data, changes)
        return changes

    def update_grains(self, returns: Any) -> bool:
        """Apply a ``grains.items`` result (``{minion: grains}``); whether anything changed."""
        if not isinstance(returns, Mapping):
            return False
        changed = False
        for mid, grains in returns.items():
            if not isinstance(mid, str) or not mid or not isinstance(grains, Mapping):
                continue
            entry = self.minions.get(mid)
            if entry is not None and entry.get("grains") == grains:
                continue
            self._set_grains(mid, grains)
            changed = True
        return changed

    def _new_job(self, jid: str, data: Mapping[str, Any]) -> None:
        previous = self.jobs.pop(jid, None)
        minions: dict[str, dict[str, Any]] = {mid: {"success": False} for mid in _str_list(data.get("minions"))}
        if previous is not None:
            # a return that overtook its ``new`` is kept
            for mid, entry in previous.get("minions", {}).items():
                if "return" in entry:
                    minions[mid] = entry
        job = {
            "jid": data.get("jid", jid),
            "start_time": data.get("_stamp"),
            "minions": minions,
            "fun": data.get("fun"),
            "tgt": data.get("tgt"),
            "tgt_type": data.get("tgt_type"),
            "state": "running",
        }
        if previous is not None and _all_succeeded(minions):
            job["state"] = "complete"
        self._insert(jid, job)

    def _job_return(self, jid: str, mid: str, data: Mapping[str, Any]) -> None:
        job = self.jobs.get(jid)
        if job is None:
            job = {
                "jid": data.get("jid", jid),
                "start_time": data.get("_stamp"),
                "minions": {},
                "fun": data.get("fun"),
                "tgt": None,
                "tgt_type": None,
                "state": "running",
            }
            self._insert(jid, job)
        retcode = data.get("retcode")
        success = data.get("success")
        if not isinstance(success, bool):
            success = retcode == 0 if isinstance(retcode, int) and not isinstance(retcode, bool) else True
        job["minions"][mid] = {"return": data.get("return"), "retcode": retcode, "success": success}
        if _all_succeeded(job["minions"]):
            job["state"] = "complete"
        self._job_json.pop(jid, None)

    def _insert(self, jid: str, job: dict[str, Any]) -> None:
        while len(self.jobs) >= self.max_jobs:
            victim = next((key for key, value in self.jobs.items() if value.get("state") == "complete"), None)
            if victim is None:
                victim = next(iter(self.jobs))
            del self.jobs[victim]
            self._job_json.pop(victim, None)
            self.evicted += 1
        self.jobs[jid] = job
        self._job_json.pop(jid, None)

    def _set_grains(self, mid: str, grains: Any) -> None:
        self.minions.setdefault(mid, {})["grains"] = grains
        self._minion_json.pop(mid, None)

    def _key(self, data: Mapping[str, Any], changes: Changes) -> None:
        act, mid = data.get("act"), data.get("id")
        if not isinstance(mid, str) or not mid:
            return
        if act == "delete":
            self._drop_minion(mid)
            changes.minions = True
        elif act == "accept":
            self.minions.setdefault(mid, {})
            changes.minions = True

    def _presence(self, data: Mapping[str, Any], changes: Changes) -> None:
        if "present" in data:
            present = set(_str_list(data.get("present")))
            lost = set(self.minions) - present
            new = [mid for mid in _str_list(data.get("present")) if mid not in self.minions]
        else:
            lost = {mid for mid in _str_list(data.get("lost")) if mid in self.minions}
            new = [mid for mid in _str_list(data.get("new")) if mid not in self.minions]
        for mid in lost:
            self._drop_minion(mid)
        new = list(dict.fromkeys(new))
        for mid in new:
            self.minions[mid] = {}
        if lost or new:
            changes.minions = True
        changes.fetch_grains.extend(new)

    def _drop_minion(self, mid: str) -> None:
        self.minions.pop(mid, None)
        self._minion_json.pop(mid, None)

    # ------------------------------------------------------------------
    # frames

    def messages(self, changes: Changes) -> list[str]:
        """The JSON texts to send for *changes*: jobs first, then minions."""
        out = []
        if changes.jobs:
            out.append(self.jobs_json())
        if changes.minions:
            out.append(self.minions_json())
        return out

    def jobs_json(self) -> str:
        """``{"jobs": {...}}`` as JSON."""
        items = []
        for jid, job in self.jobs.items():
            text = self._job_json.get(jid)
            if text is None:
                text = _encode_job(job)
                self._job_json[jid] = text
            items.append(f"{_dumps(jid)}: {text}")
        return '{"jobs": {' + ", ".join(items) + "}}"

    def minions_json(self) -> str:
        """``{"minions": ...}`` as JSON (a dict by id, or a list)."""
        items = []
        for mid, entry in self.minions.items():
            text = self._minion_json.get(mid)
            if text is None:
                text = _encode_minion(mid, entry)
                self._minion_json[mid] = text
            items.append(text if self.minions_as_list else f"{_dumps(mid)}: {text}")
        if self.minions_as_list:
            return '{"minions": [' + ", ".join(items) + "]}"
        return '{"minions": {' + ", ".join(items) + "}}"

    def snapshot(self) -> dict[str, Any]:
        """The whole view as plain data (tests, debugging)."""
        return {"minions": json.loads(self.minions_json())["minions"], "jobs": json.loads(self.jobs_json())["jobs"]}


def _all_succeeded(minions: dict[str, dict[str, Any]]) -> bool:
    return bool(minions) and all(entry.get("success") is True for entry in minions.values())


def _encode_job(job: dict[str, Any]) -> str:
    try:
        return _dumps(job)
    except (ValueError, TypeError, RecursionError):
        pass
    # one return cannot be written: replace that one, keep the others
    minions = {}
    for mid, entry in job.get("minions", {}).items():
        try:
            _dumps(entry)
        except (ValueError, TypeError, RecursionError):
            entry = {**entry, "return": _UNSERIALISABLE}
        minions[mid] = entry
    try:
        return _dumps({**job, "minions": minions})
    except (ValueError, TypeError, RecursionError):
        return _dumps({"jid": str(job.get("jid")), "state": str(job.get("state")), "minions": {}})


def _encode_minion(mid: str, entry: dict[str, Any]) -> str:
    value: dict[str, Any] = {"id": mid}
    if "grains" in entry:
        value["grains"] = entry["grains"]
    try:
        return _dumps(value)
    except (ValueError, TypeError, RecursionError):
        return _dumps({"id": mid, "grains": _UNSERIALISABLE})
