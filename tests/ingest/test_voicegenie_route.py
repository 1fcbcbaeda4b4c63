"""``POST /webhooks/voicegenie``: VoiceGenie sends no webhooks, so the route refuses clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select

from ingest.app import create_app
from ledger import Delivery, Recording, migrate
from tests.fixtures.callrec import base_env, settings_from


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    settings = settings_from(base_env(tmp_path, CALLREC_VOICEGENIE_API_KEY="k"))
    migrate(settings.database_url)
    return create_app(settings)


@pytest.mark.parametrize("path", ["/webhooks/voicegenie", "/webhooks/voicegenie/default"])
@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b'{"call_uuid": "call-1"}', "application/json"), (b"", "text/plain")],
)
def test_any_post_gets_404_naming_the_polling_and_writes_nothing(
    app: Flask, path: str, body: bytes, content_type: str
) -> None:
    response = app.test_client().post(path, data=body, content_type=content_type)
    assert response.status_code == 404
    assert response.get_json() == {
        "error": "VoiceGenie sends no recording webhooks: recordings are captured by polling "
        "GET /callRecordings"
    }
    with app.extensions["callrec"].sessions() as session:
        for model in (Delivery, Recording):
            assert session.execute(select(func.count()).select_from(model)).scalar_one() == 0
