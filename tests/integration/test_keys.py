"""``POST /keys`` (spec §5.9): a key pair generated and accepted on the real master, sent as a tar."""

from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization

from saltapi_twisted.sandbox import ADMIN_USER

from ..conftest import Api


def _members(body: bytes) -> dict[str, tuple[int, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as archive:
        out = {}
        for member in archive.getmembers():
            handle = archive.extractfile(member)
            assert handle is not None
            out[member.name] = (member.mode, handle.read())
        return out


def _accepted(api: Api, token: str) -> list[str]:
    response = api.get("/keys", headers={"X-Auth-Token": token})
    assert response.status_code == 200, response.text
    return list(response.json()["return"]["minions"])


@pytest.fixture
def new_mid(api: Api, admin_token: str) -> Iterator[str]:
    mid = f"generated-{uuid.uuid4().hex[:12]}"
    yield mid
    deleted = api.run([{"client": "wheel", "fun": "key.delete", "match": mid}], admin_token)
    assert deleted.status_code == 200, deleted.text
    assert mid not in _accepted(api, admin_token)


def test_post_keys_generates_and_accepts(api: Api, admin_token: str, new_mid: str) -> None:
    response = api.post("/keys", json={"mid": new_mid}, headers={"X-Auth-Token": admin_token}, timeout=120)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/x-tar"
    assert response.headers["Content-Disposition"] == f'attachment; filename="saltkeys-{new_mid}.tar"'
    assert response.headers["Cache-Control"] == "no-store"
    members = _members(response.content)
    assert set(members) == {"minion.pem", "minion.pub"}
    assert members["minion.pem"][0] == 0o600 and members["minion.pub"][0] == 0o644
    private = serialization.load_pem_private_key(members["minion.pem"][1], password=None)
    public = serialization.load_pem_public_key(members["minion.pub"][1])
    assert private.public_key().public_numbers() == public.public_numbers()  # type: ignore[union-attr]
    assert private.key_size == 2048  # type: ignore[union-attr]
    assert new_mid in _accepted(api, admin_token)

    # the master keeps the accepted key: a second request is a conflict, force replaces it
    again = api.post("/keys", json={"mid": new_mid}, headers={"X-Auth-Token": admin_token}, timeout=120)
    assert again.status_code == 409, again.text
    assert again.json()["error"] == "conflict"
    forced = api.post(
        "/keys", data={"mid": new_mid, "force": "true", "keysize": "3072"}, headers={"X-Auth-Token": admin_token},
        timeout=120,
    )
    assert forced.status_code == 200, forced.text
    replaced = serialization.load_pem_public_key(_members(forced.content)["minion.pub"][1])
    assert replaced.key_size == 3072  # type: ignore[union-attr]
    assert replaced.public_numbers() != public.public_numbers()  # type: ignore[union-attr]


def test_post_keys_with_body_credentials(api: Api, new_mid: str) -> None:
    body = {"mid": new_mid, "username": ADMIN_USER[0], "password": ADMIN_USER[1], "eauth": "file"}
    response = api.post("/keys", json=[body], timeout=120)
    assert response.status_code == 200, response.text
    assert set(_members(response.content)) == {"minion.pem", "minion.pub"}
    wrong = api.post("/keys", json={**body, "password": "wrong", "force": True}, timeout=60)
    assert wrong.status_code == 401, wrong.text


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"mid": "../../etc/x"}, 400, "bad_request"),
        ({"mid": ".."}, 400, "bad_request"),
        ({"mid": "a\nb"}, 400, "bad_request"),
        ({"mid": ""}, 400, "bad_request"),
        ({"mid": "x" * 256}, 400, "bad_request"),
        ({"mid": "ok", "keysize": 1024}, 400, "bad_request"),
        ({"mid": "ok", "keysize": 65536}, 400, "bad_request"),
        ({"mid": "ok", "keysize": "big"}, 400, "bad_request"),
        ({"mid": "ok", "force": "maybe"}, 400, "bad_request"),
        ({"mid": "ok", "fun": "key.delete"}, 400, "unknown_key"),
        ({"mid": "ok", "client": "runner"}, 400, "unknown_key"),
        ({}, 400, "bad_request"),
        ([1, 2], 400, "bad_request"),
    ],
)
def test_post_keys_refusals(api: Api, admin_token: str, body: object, status: int, error: str) -> None:
    before = _accepted(api, admin_token)
    response = api.post("/keys", json=body, headers={"X-Auth-Token": admin_token})
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert _accepted(api, admin_token) == before


def test_post_keys_needs_wheel_rights(api: Api, limited_token: str, admin_token: str) -> None:
    mid = f"refused-{uuid.uuid4().hex[:8]}"
    response = api.post("/keys", json={"mid": mid}, headers={"X-Auth-Token": limited_token}, timeout=60)
    assert response.status_code == 403, response.text
    assert api.post("/keys", json={"mid": mid}).status_code == 401
    assert mid not in _accepted(api, admin_token)
