"""``LoginDecider`` and the nkeys and JWTs under it (ADR 0051), without a cluster.

Requests are signed here by a server nkey made for the test, as a node signs them; the
real nodes' requests and their acceptance of the answers are covered in
``tests/scale/test_nats_auth_callout.py``. These cases are the refusals and edges a cluster
would make slow to reach: malformed or forged requests, hub names, the password cache.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from edgeship.errors import InputError
from edgeship.hub.broker.nats import NatsUser, hash_password_bcrypt, parse_auth_callout, render_users
from edgeship.hub.broker.nats_callout import SEED_FILE, LoginDecider, load_issuer, make_issuer
from edgeship.hub.broker.nats_jwt import ACCOUNT, SERVER, USER, NKey, decode_jwt, encode_jwt, public_key_bytes

SERVER_KEY = NKey.generate(SERVER)
USER_KEY = NKey.generate(USER)
HASH = hash_password_bcrypt("pw-a")


def request(user: str = "dev.a", password: str = "pw-a", mqtt_id: str | None = "dev~a", kind: str = "mqtt",
            signer: NKey = SERVER_KEY, server_id: str | None = None, expires: int | None = None) -> bytes:  # fmt: skip
    client: dict[str, Any] = {"user": user, "type": kind, **({"mqtt_id": mqtt_id} if mqtt_id is not None else {})}
    nats = {"server_id": {"id": server_id or signer.public_key, "name": "n0", "host": "127.0.0.1"},
            "user_nkey": USER_KEY.public_key, "client_info": client,
            "connect_opts": {"user": user, "pass": password, "protocol": 0},
            "type": "authorization_request", "version": 2}  # fmt: skip
    claims = {"sub": "nats_authorization_request", "aud": "nats-authorization-request", "nats": nats,
              **({"exp": expires} if expires is not None else {})}  # fmt: skip
    return encode_jwt(claims, signer).encode()


@pytest.fixture
def decider() -> LoginDecider:
    return LoginDecider(NKey.generate(), lambda: {"dev.a": HASH})


def answer_of(decider: LoginDecider, token: bytes) -> dict[str, Any]:
    answer = decider.answer(token)
    assert answer is not None
    response = decode_jwt(answer, ACCOUNT)
    assert response["iss"] == decider.issuer.public_key and response["sub"] == USER_KEY.public_key
    assert response["aud"] == SERVER_KEY.public_key
    return dict(response["nats"])


def test_a_devices_own_login_gets_a_user_jwt_with_its_permissions_for_mqtt_only(decider: LoginDecider) -> None:
    user = decode_jwt(answer_of(decider, request())["jwt"], ACCOUNT)
    assert user["sub"] == USER_KEY.public_key and user["aud"] == "$G" and user["name"] == "dev.a"
    assert user["nats"]["allowed_connection_types"] == ["MQTT"]
    assert "edgeship.v1.devices.dev//a.reported" in user["nats"]["pub"]["allow"]
    assert not any("dev//b" in subject for subject in user["nats"]["sub"]["allow"])


@pytest.mark.parametrize(("token", "why"), [
    (request(mqtt_id="dev~b"), "must use its own, 'dev~a'"),
    (request(mqtt_id=None), "must use its own"),
    (request(password="wrong"), "wrong username or password"),
    (request(user="dev.z"), "wrong username or password"),
    (request(kind="nats"), "over MQTT only"),
    (request(user="hub-0"), "hub identity"),
    (request(password=""), "without a username and password"),
])  # fmt: skip
def test_anything_but_a_devices_own_mqtt_login_is_answered_with_an_error(decider: LoginDecider, token: bytes,
                                                                         why: str) -> None:  # fmt: skip
    nats = answer_of(decider, token)
    assert "jwt" not in nats and why in nats["error"]
    assert decider.refused == 1 and decider.allowed == 0


def test_a_request_that_is_not_a_nodes_gets_no_answer(decider: LoginDecider) -> None:
    forged = request().decode().split(".")
    forged[1] = base64.urlsafe_b64encode(json.dumps({"iss": SERVER_KEY.public_key}).encode()).decode().rstrip("=")
    for token, why in (
        (b"not a jwt", "three parts"),
        (".".join(forged).encode(), "signature"),
        (request(signer=NKey.generate()), "not a public server nkey"),  # signed by an account, not a server
        (request(server_id=NKey.generate(SERVER).public_key), "not its signer's"),
        (b"x" * 70_000, "more than"),
    ):
        with pytest.raises(InputError, match=why):
            decider.answer(token)


def test_a_password_bcrypt_accepted_is_remembered_until_the_devices_hash_changes() -> None:
    hashes = {"dev.a": HASH}
    decider = LoginDecider(NKey.generate(), lambda: hashes)
    assert "jwt" in answer_of(decider, request())
    remembered = decider._checked["dev.a"]
    assert remembered[0] == HASH and b"pw-a" not in remembered[1]  # a SHA-256, not the password
    hashes["dev.a"] = hash_password_bcrypt("pw-new")  # rotated: the remembered password no longer counts
    assert "wrong username or password" in answer_of(decider, request())["error"]
    assert "jwt" in answer_of(decider, request(password="pw-new"))


def test_nkeys_round_trip_and_a_bad_key_is_named() -> None:
    key = NKey.generate()
    assert key.seed.startswith("SA") and key.public_key.startswith("A") and len(key.public_key) == 56
    assert NKey(key.seed).public_key == key.public_key
    assert len(public_key_bytes(key.public_key, ACCOUNT)) == 32
    with pytest.raises(InputError, match="checksum"):
        public_key_bytes(key.public_key[:-1] + ("A" if key.public_key[-1] != "A" else "B"), ACCOUNT)
    with pytest.raises(InputError, match="not a public user nkey"):
        public_key_bytes(key.public_key, USER)
    with pytest.raises(InputError, match="must start with 'S'"):
        NKey(key.public_key)


def test_the_issuer_seed_is_made_once_kept_private_and_refused_when_others_may_read_it(tmp_path: Path) -> None:
    first = make_issuer(tmp_path)
    assert (tmp_path / SEED_FILE).stat().st_mode & 0o777 == 0o600
    assert make_issuer(tmp_path).public_key == first.public_key  # a rerun of broker-config keeps the key
    (tmp_path / SEED_FILE).chmod(0o644)
    with pytest.raises(InputError, match="chmod 600"):
        load_issuer(tmp_path / SEED_FILE)


def test_users_conf_names_the_issuer_and_the_hubs_and_refuses_a_key_that_is_no_account() -> None:
    users = [NatsUser("hub-1", HASH), NatsUser("hub-0", HASH), NatsUser("dev.a", HASH)]
    issuer = NKey.generate().public_key
    assert parse_auth_callout(render_users(users, issuer)) == (issuer, ["hub-0", "hub-1"])
    assert parse_auth_callout(render_users(users)) is None
    with pytest.raises(InputError, match="not a public account nkey"):
        render_users(users, NKey.generate(USER).public_key)


def test_a_login_refused_again_and_again_is_logged_once_a_minute(decider: LoginDecider,
                                                                 caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="edgeship.hub.broker"):
        for _ in range(5):
            answer_of(decider, request(password="wrong"))
        answer_of(decider, request(user="dev.z"))  # another name: its own warning, counting the four left out
    warnings = [r.getMessage() for r in caplog.records if "refused a NATS login" in r.getMessage()]
    assert len(warnings) == 2 and decider.refused == 6, warnings
    assert "'dev.a'" in warnings[0] and "'dev.z'" in warnings[1] and "4 other refusal(s)" in warnings[1]


def test_a_request_its_node_stopped_waiting_for_is_left_unanswered(decider: LoginDecider) -> None:
    """In a storm an answer after the node's timeout only costs work: the device is told nothing and retries."""
    import time

    assert decider.answer(request(expires=int(time.time()) - 1)) is None
    assert (decider.expired, decider.allowed, decider.refused) == (1, 0, 0)
    assert "jwt" in answer_of(decider, request(expires=int(time.time()) + 5))


def test_only_a_password_not_yet_checked_needs_the_slow_path(decider: LoginDecider) -> None:
    """The service decides remembered passwords on its event loop and sends only bcrypt checks to its threads."""
    from edgeship.hub.broker.nats_callout import NeedsBcrypt

    with pytest.raises(NeedsBcrypt):
        decider.answer(request(), slow=False)
    assert decider.allowed == decider.refused == 0  # nothing decided yet
    assert "jwt" in answer_of(decider, request())  # bcrypt, on the slow path
    fast = decider.answer(request(), slow=False)
    assert fast is not None and "jwt" in decode_jwt(fast, ACCOUNT)["nats"]
    unknown = decider.answer(request(user="dev.z"), slow=False)  # no hash to check: refused at once
    assert unknown is not None and "error" in decode_jwt(unknown, ACCOUNT)["nats"]
