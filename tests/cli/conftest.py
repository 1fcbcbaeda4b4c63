"""A seeded callrec for the operator commands: a migrated ledger and a storage, real ones
(SQLite + disk, PostgreSQL + moto S3), and a way to run ``callrec …`` against them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from callrec_cli import main
from ledger import (
    Recording,
    State,
    accept_refs,
    claim,
    finish,
    make_engine,
    make_session_factory,
    migrate,
)
from providers.base import RecordingRef
from storage import Storage, metadata_key, recording_key, storage_from_url
from tests.fixtures.callrec import base_env

LEASE = timedelta(seconds=60)


@dataclass
class Seeded:
    env: dict[str, str]
    engine: Engine
    sessions: sessionmaker[Session]
    storage: Storage

    def run(self, *args: str) -> Result:
        return CliRunner().invoke(main, list(args), env=self.env, catch_exceptions=False)

    def accept(self, key: str, provider: str = "telnyx", account: str = "default") -> int:
        result = accept_refs(
            self.sessions, provider, account, [RecordingRef(recording_id=key)], source="test"
        )
        return result.recording_ids[0]

    def stored(
        self,
        key: str,
        data: bytes = b"audio bytes",
        provider: str = "telnyx",
        account: str = "default",
        *,
        write_audio: bool = True,
        write_record: bool = True,
        ledger_size: int | None = None,
        ledger_sha256: str | None = None,
    ) -> str:
        """A row stored by the ledger's own transitions; the storage as told. Its key."""
        recording_id = self.accept(key, provider, account)
        held = claim(self.sessions, recording_id, LEASE)
        assert held is not None
        audio = recording_key(provider, account, key, "mp3")
        sha256 = hashlib.sha256(data).hexdigest()
        if write_audio:
            self.storage.write(audio, [data], content_type="audio/mpeg")
        if write_record:
            record = {"size_bytes": len(data), "sha256": sha256, "recording_id": key}
            body = json.dumps(record).encode()
            self.storage.write(metadata_key(audio), [body], content_type="application/json")
        assert finish(
            self.sessions,
            held,
            State.STORED,
            storage_key=audio,
            size_bytes=len(data) if ledger_size is None else ledger_size,
            sha256=ledger_sha256 or sha256,
        )
        return audio

    def failed(
        self, key: str, reason: str, provider: str = "telnyx", account: str = "default"
    ) -> int:
        recording_id = self.accept(key, provider, account)
        held = claim(self.sessions, recording_id, LEASE)
        assert held is not None
        assert finish(self.sessions, held, State.FAILED, detail=reason)
        return recording_id

    def row(self, recording_id: int) -> Recording:
        with self.sessions() as session:
            return session.execute(
                select(Recording).where(Recording.id == recording_id)
            ).scalar_one()


@pytest.fixture(
    params=[
        "sqlite-disk",
        pytest.param("postgres-s3", marks=[pytest.mark.postgres, pytest.mark.s3]),
    ]
)
def seeded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Seeded]:
    env = base_env(tmp_path)
    if request.param == "postgres-s3":
        endpoint, bucket = request.getfixturevalue("s3_bucket")
        env["CALLREC_DATABASE_URL"] = request.getfixturevalue("postgres_url")
        env["CALLREC_STORAGE_URL"] = f"s3://{bucket}/recordings"
        env["CALLREC_S3_ENDPOINT_URL"] = endpoint
    database = env["CALLREC_DATABASE_URL"]
    migrate(database)
    engine = make_engine(database)
    storage = storage_from_url(
        env["CALLREC_STORAGE_URL"], s3_endpoint_url=env.get("CALLREC_S3_ENDPOINT_URL")
    )
    try:
        yield Seeded(env, engine, make_session_factory(engine), storage)
    finally:
        engine.dispose()
