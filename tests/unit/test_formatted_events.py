"""Transitions of the formatted-events view (spec §6.3, §6.4 ``format_events``)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from saltapi_twisted.formatted_events import MAX_JOBS, Changes, FormattedView

JID = "20250101000000000001"


def new(jid: str = JID, minions: Any = ("m1", "m2"), **extra: Any) -> tuple[str, dict[str, Any]]:
    data = {
        "jid": jid,
        "minions": list(minions),
        "fun": "test.ping",
        "tgt": "*",
        "tgt_type": "glob",
        "user": "saltdev",
        "_stamp": "2025-01-01T00:00:00.000000",
        **extra,
    }
    return f"salt/job/{jid}/new", data


def ret(
    mid: str, jid: str = JID, fun: str = "test.ping", value: Any = True, **extra: Any
) -> tuple[str, dict[str, Any]]:
    data = {"id": mid, "jid": jid, "fun": fun, "return": value, "retcode": 0, "success": True, **extra}
    return f"salt/job/{jid}/ret/{mid}", data


def apply(view: FormattedView, event: tuple[str, dict[str, Any]]) -> tuple[Changes, list[dict[str, Any]]]:
    changes = view.process(*event)
    return changes, [json.loads(text) for text in view.messages(changes)]


# ----------------------------------------------------------------------------
# jobs


def test_new_job_is_running_with_every_minion_unsuccessful() -> None:
    view = FormattedView()
    changes, messages = apply(view, new())
    assert changes.jobs and not changes.minions and not changes.fetch_grains
    assert messages == [
        {
            "jobs": {
                JID: {
                    "jid": JID,
                    "start_time": "2025-01-01T00:00:00.000000",
                    "minions": {"m1": {"success": False}, "m2": {"success": False}},
                    "fun": "test.ping",
                    "tgt": "*",
                    "tgt_type": "glob",
                    "state": "running",
                }
            }
        }
    ]


def test_job_completes_when_every_minion_succeeded() -> None:
    view = FormattedView()
    apply(view, new())
    _, messages = apply(view, ret("m1"))
    job = messages[0]["jobs"][JID]
    assert job["state"] == "running"
    assert job["minions"]["m1"] == {"return": True, "retcode": 0, "success": True}
    assert job["minions"]["m2"] == {"success": False}
    _, messages = apply(view, ret("m2", value={"a": [1, 2]}))
    job = messages[0]["jobs"][JID]
    assert job["state"] == "complete"
    assert job["minions"]["m2"]["return"] == {"a": [1, 2]}


def test_a_failed_minion_keeps_the_job_running() -> None:
    view = FormattedView()
    apply(view, new(minions=["m1"]))
    _, messages = apply(view, ret("m1", value="boom", retcode=1, success=False))
    job = messages[0]["jobs"][JID]
    assert job["state"] == "running"
    assert job["minions"]["m1"] == {"return": "boom", "retcode": 1, "success": False}


@pytest.mark.parametrize(
    ("drop", "extra", "expected"),
    [
        (("retcode", "success"), {}, {"retcode": None, "success": True}),
        (("success",), {"retcode": 2}, {"retcode": 2, "success": False}),
        (("success",), {"retcode": 0}, {"retcode": 0, "success": True}),
        (("retcode",), {"success": False}, {"retcode": None, "success": False}),
        (("success",), {"success": "yes"}, {"retcode": 0, "success": True}),
    ],
    ids=["neither", "retcode-2", "retcode-0", "success-only", "non-bool-success"],
)
def test_missing_retcode_or_success_is_tolerated(drop: tuple[str, ...], extra: dict, expected: dict) -> None:
    view = FormattedView()
    apply(view, new(minions=["m1"]))
    tag, data = ret("m1")
    for key in drop:
        data.pop(key)
    data.update(extra)
    _, messages = apply(view, (tag, data))
    entry = messages[0]["jobs"][JID]["minions"]["m1"]
    assert {k: entry[k] for k in ("retcode", "success")} == expected


def test_return_before_new_enters_the_view_and_survives_the_new() -> None:
    view = FormattedView()
    _, messages = apply(view, ret("m1"))
    job = messages[0]["jobs"][JID]
    assert job["minions"] == {"m1": {"return": True, "retcode": 0, "success": True}}
    assert job["fun"] == "test.ping" and job["tgt"] is None and job["state"] == "complete"
    _, messages = apply(view, new(minions=["m1", "m2"]))
    job = messages[0]["jobs"][JID]
    assert job["minions"]["m1"]["return"] is True
    assert job["minions"]["m2"] == {"success": False}
    assert job["state"] == "running" and job["tgt"] == "*"


def test_jobs_are_bounded_oldest_complete_evicted_first() -> None:
    view = FormattedView(max_jobs=3)
    jids = [f"2025010100000000000{i}" for i in range(5)]
    for jid in jids[:3]:
        apply(view, new(jid, minions=["m1"]))
    apply(view, ret("m1", jid=jids[1]))  # the only complete job
    apply(view, new(jids[3], minions=["m1"]))
    assert list(view.jobs) == [jids[0], jids[2], jids[3]]
    apply(view, new(jids[4], minions=["m1"]))  # nothing complete: the oldest goes
    assert list(view.jobs) == [jids[2], jids[3], jids[4]]
    assert view.evicted == 2


def test_default_bound_is_1000_jobs() -> None:
    view = FormattedView()
    for i in range(MAX_JOBS + 50):
        view.process(*new(f"2025{i:016d}", minions=["m1"]))
    assert len(view.jobs) == MAX_JOBS == 1000
    assert len(json.loads(view.jobs_json())["jobs"]) == 1000


def test_other_job_events_are_ignored() -> None:
    view = FormattedView()
    for tag in (f"salt/job/{JID}/prog/m1/0", f"salt/job/{JID}", "salt/job//new", f"salt/job/{JID}/ret/",
                f"salt/run/{JID}/new", f"minion/job/{JID}/new"):
        assert not view.process(tag, {"fun": "x", "minions": ["m1"]})
    assert view.jobs == {} and view.minions == {}


# ----------------------------------------------------------------------------
# minions


def test_grains_return_updates_the_minion_after_the_jobs() -> None:
    view = FormattedView()
    apply(view, new(fun="grains.items", minions=["m1"]))
    changes, messages = apply(view, ret("m1", fun="grains.items", value={"id": "m1", "os": "Debian"}))
    assert changes.jobs and changes.minions
    assert list(messages[0]) == ["jobs"] and list(messages[1]) == ["minions"]
    assert messages[1] == {"minions": {"m1": {"id": "m1", "grains": {"id": "m1", "os": "Debian"}}}}


def test_minions_as_a_list_for_ws_format_events() -> None:
    view = FormattedView(minions_as_list=True)
    view.process(*ret("m1", fun="grains.items", value={"os": "A"}))
    view.process(*ret("m2", fun="grains.items", value={"os": "B"}))
    assert json.loads(view.minions_json()) == {
        "minions": [{"id": "m1", "grains": {"os": "A"}}, {"id": "m2", "grains": {"os": "B"}}]
    }


def test_update_grains_from_a_local_result() -> None:
    view = FormattedView()
    assert view.update_grains({"m1": {"os": "A"}, "m2": "Minion did not return", 3: {}})
    assert view.snapshot()["minions"] == {"m1": {"id": "m1", "grains": {"os": "A"}}}
    assert not view.update_grains({"m1": {"os": "A"}})  # nothing new: nothing to send
    assert view.update_grains({"m1": {"os": "B"}})
    assert not view.update_grains("No minions matched the target.")


def test_key_accept_and_delete() -> None:
    view = FormattedView()
    changes, messages = apply(view, ("salt/key", {"act": "accept", "id": "m3", "result": True}))
    assert changes.minions and not changes.fetch_grains
    assert messages == [{"minions": {"m3": {"id": "m3"}}}]
    changes, messages = apply(view, ("salt/key", {"act": "delete", "id": "m3", "result": True}))
    assert messages == [{"minions": {}}]
    ignored: list[dict[str, Any]] = [{"act": "pend", "id": "m4"}, {"act": "reject", "id": "m4"}, {"act": "accept"}]
    ignored.append({"act": "accept", "id": 7})
    for data in ignored:
        assert not view.process("salt/key", data)


def test_presence_present_adds_and_drops() -> None:
    view = FormattedView()
    view.process(*ret("m1", fun="grains.items", value={"os": "A"}))
    view.process(*ret("m2", fun="grains.items", value={"os": "B"}))
    changes, messages = apply(view, ("salt/presence/present", {"present": ["m2", "m3"]}))
    assert changes.minions and changes.fetch_grains == ["m3"]
    assert messages == [{"minions": {"m2": {"id": "m2", "grains": {"os": "B"}}, "m3": {"id": "m3"}}}]
    # the same list again changes nothing and sends nothing
    changes = view.process("salt/presence/present", {"present": ["m2", "m3"]})
    assert not changes and view.messages(changes) == []


def test_presence_change_new_and_lost() -> None:
    view = FormattedView()
    view.process(*ret("m1", fun="grains.items", value={}))
    view.process(*ret("m2", fun="grains.items", value={}))
    # a change with only "new" does not drop anyone (rest_tornado dropped everyone)
    changes = view.process("salt/presence/change", {"new": ["m3", "m3"]})
    assert changes.fetch_grains == ["m3"]
    assert set(view.minions) == {"m1", "m2", "m3"}
    changes = view.process("salt/presence/change", {"new": [], "lost": ["m1", "unknown"]})
    assert changes.minions and not changes.fetch_grains
    assert set(view.minions) == {"m2", "m3"}


# ----------------------------------------------------------------------------
# robustness


@pytest.mark.parametrize(
    ("tag", "data"),
    [
        (f"salt/job/{JID}/new", {"minions": "m1"}),
        (f"salt/job/{JID}/new", {"minions": [1, None, "m1"]}),
        (f"salt/job/{JID}/new", {}),
        (f"salt/job/{JID}/ret/m1", {}),
        ("salt/key", {}),
        ("salt/presence/present", {"present": None}),
        ("salt/presence/change", {"new": 5, "lost": "x"}),
        ("salt", {}),
        ("", {}),
    ],
)
def test_malformed_events_never_raise(tag: str, data: dict[str, Any]) -> None:
    view = FormattedView()
    changes = view.process(tag, data)
    for text in view.messages(changes):
        json.loads(text)


def test_non_dict_data_is_ignored() -> None:
    view = FormattedView()
    assert not view.process(f"salt/job/{JID}/new", ["not", "a", "dict"])
    assert not view.process(None, {})  # type: ignore[arg-type]


def test_unserialisable_return_does_not_break_frames() -> None:
    view = FormattedView()
    deep: Any = []
    for _ in range(5000):
        deep = [deep]
    view.process(*new(minions=["m1", "m2"]))
    view.process(*ret("m1", value=deep))
    view.process(*ret("m2", value=b"\xffbytes"))
    jobs = json.loads(view.jobs_json())["jobs"][JID]
    assert jobs["minions"]["m1"]["return"] == "<unserialisable return>"
    assert jobs["minions"]["m2"]["return"] == "\ufffdbytes"


def test_frames_are_recomputed_after_changes() -> None:
    view = FormattedView()
    view.process(*new(minions=["m1"]))
    first = view.jobs_json()
    assert view.jobs_json() == first
    view.process(*ret("m1"))
    assert json.loads(view.jobs_json())["jobs"][JID]["state"] == "complete"


def test_max_jobs_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FormattedView(max_jobs=0)


_TAGS = st.sampled_from(
    [f"salt/job/{JID}/new", f"salt/job/{JID}/ret/m1", f"salt/job/{JID}/ret/m2", "salt/key",
     "salt/presence/present", "salt/presence/change", "salt/job/2/new", "salt/job/2/ret/m1"]
)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.binary(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)
_DATA = st.dictionaries(
    st.sampled_from(["minions", "fun", "return", "retcode", "success", "act", "id", "present", "new", "lost",
                     "_stamp", "tgt", "jid"]),
    _VALUES,
    max_size=6,
)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(_TAGS, _DATA), max_size=30), st.booleans())
def test_any_event_sequence_yields_valid_bounded_json(events: list[tuple[str, dict]], as_list: bool) -> None:
    view = FormattedView(max_jobs=1, minions_as_list=as_list)
    for tag, data in events:
        changes = view.process(tag, data)
        for text in view.messages(changes):
            frame = json.loads(text)
            assert set(frame) in ({"jobs"}, {"minions"})
        assert len(view.jobs) <= 1
