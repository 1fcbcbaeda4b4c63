"""``/webhooks/<provider>/<account>`` for accounts of the accounts file: each verified with its
own key, unknown accounts 404, rows and storage keys carrying the account."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from nacl.signing import SigningKey
from sqlalchemy import select

from emulators.telnyx import TelnyxWebhookSigner
from ingest.app import create_app
from ledger import Recording, migrate
from storage import recording_key
from tests.fixtures.callrec import base_env, settings_from

PAYLOADS = Path(__file__).resolve().parents[1] / "payloads" / "telnyx"
BODY = (PAYLOADS / "call.recording.saved.tutorial.json").read_bytes()
EAST = TelnyxWebhookSigner(SigningKey(b"\x05" * 32))
WEST = TelnyxWebhookSigner(SigningKey(b"\x06" * 32))


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FlaskClient]:
    monkeypatch.setenv("TEST_WEST_PUBLIC_KEY", WEST.public_key_b64)
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(
        "[[accounts]]\nprovider = 'telnyx'\nname = 'east'\n"
        f"credentials = {{ public_key = '{EAST.public_key_b64}' }}\n"
        "[[accounts]]\nprovider = 'telnyx'\nname = 'west'\n"
        "credentials = { public_key_env = 'TEST_WEST_PUBLIC_KEY' }\n"
    )
    settings = settings_from(base_env(tmp_path, CALLREC_ACCOUNTS_FILE=str(accounts)))
    migrate(settings.database_url)
    app = create_app(settings)
    app.config["sessions"] = app.extensions["callrec"].sessions
    yield app.test_client()


def post(client: FlaskClient, path: str, signer: TelnyxWebhookSigner) -> int:
    return client.post(path, data=BODY, headers=signer.headers(BODY)).status_code


def rows(client: FlaskClient) -> list[tuple[str, str]]:
    with client.application.config["sessions"]() as session:
        found = session.execute(select(Recording.account, Recording.recording_key)).all()
    return [(account, key) for account, key in found]


def test_each_account_is_verified_with_its_own_key(client: FlaskClient) -> None:
    assert post(client, "/webhooks/telnyx/east", EAST) == 200
    assert post(client, "/webhooks/telnyx/west", WEST) == 200
    assert post(client, "/webhooks/telnyx/east", WEST) == 401
    assert post(client, "/webhooks/telnyx/west", EAST) == 401
    recording = "10cd86ac-5a0e-4a1e-9d38-0a7b1b7c8f21"
    assert sorted(rows(client)) == [("east", recording), ("west", recording)]
    # One recording id in two accounts: two ledger rows, two storage keys.
    assert recording_key("telnyx", "east", recording, "mp3").startswith("telnyx/east/")
    assert recording_key("telnyx", "west", recording, "mp3").startswith("telnyx/west/")


def test_unknown_account_is_refused_as_a_bad_signature(client: FlaskClient) -> None:
    """The answer never tells whether an account exists (hostile-input issue)."""
    for path in ("/webhooks/telnyx/north", "/webhooks/twilio/east"):
        response = client.post(path, data=BODY, headers=EAST.headers(BODY))
        assert response.status_code == 401
        assert response.get_json() == {"error": "signature verification failed"}
    assert rows(client) == []


def test_the_shorthand_default_account_without_a_key_fails_closed(client: FlaskClient) -> None:
    """The env shorthand's ``default`` account still exists, unconfigured: 503, not 2xx."""
    assert post(client, "/webhooks/telnyx", EAST) == 503
    assert post(client, "/webhooks/telnyx/default", EAST) == 503
