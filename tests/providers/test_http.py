"""Provider API statuses become the right capture errors; rate-limit hints are honoured."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from emulators.telnyx import TelnyxEmulator
from providers.errors import PermanentFailure, RetryLater
from providers.http import ApiClient, retry_after_seconds

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "Wed, 15 Jan 2027 08:00:10 GMT"}, None),  # an HTTP date: relative to now
        ({"x-ratelimit-reset": "12"}, 12.0),  # a delay
        ({"x-ratelimit-reset": str(int(NOW) + 30)}, 30.0),  # an epoch time
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    value = retry_after_seconds(httpx.Headers(headers), now=NOW)
    if "GMT" in headers.get("retry-after", ""):
        assert value is not None and value > 0
    else:
        assert value == expected


def test_a_rate_limit_window_reset_is_a_wait_only_for_a_429() -> None:
    headers = httpx.Headers({"x-ratelimit-reset": "55", "retry-after": ""})
    assert retry_after_seconds(headers, now=NOW) == 55.0
    assert retry_after_seconds(headers, now=NOW, rate_limited=False) is None
    both = httpx.Headers({"x-ratelimit-reset": "55", "retry-after": "3"})
    assert retry_after_seconds(both, now=NOW, rate_limited=False) == 3.0


@pytest.fixture
def api(telnyx_emulator: TelnyxEmulator) -> Iterator[ApiClient]:
    with httpx.Client(timeout=5, trust_env=False) as http:
        yield ApiClient(
            http,
            telnyx_emulator.base_url,
            {"authorization": f"Bearer {telnyx_emulator.api_key}"},
            lambda r: f"HTTP {r.status_code}",
        )


def test_rate_limit_is_retryable_with_its_wait(
    api: ApiClient, telnyx_emulator: TelnyxEmulator
) -> None:
    telnyx_emulator.inject("api", "429", retry_after=3)
    with pytest.raises(RetryLater) as caught:
        api.get_json("/recordings")
    assert caught.value.retry_after == 3.0


@pytest.mark.parametrize(("fault", "error"), [("500", RetryLater), ("503", RetryLater)])
def test_server_errors_are_retryable(
    api: ApiClient, telnyx_emulator: TelnyxEmulator, fault: str, error: type[Exception]
) -> None:
    telnyx_emulator.inject("api", fault)  # type: ignore[arg-type]
    with pytest.raises(error) as caught:
        api.get_json("/recordings")
    # Telnyx's x-ratelimit-reset on a 5xx is no wait: the row's jittered backoff applies.
    assert isinstance(caught.value, RetryLater) and caught.value.retry_after is None


def test_not_found_and_bad_credentials_are_permanent(
    api: ApiClient, telnyx_emulator: TelnyxEmulator
) -> None:
    with pytest.raises(PermanentFailure, match="not found"):
        api.get_json("/recordings/nope")
    with httpx.Client(timeout=5, trust_env=False) as http:
        wrong = ApiClient(
            http,
            telnyx_emulator.base_url,
            {"authorization": "Bearer wrong"},
            lambda r: f"HTTP {r.status_code}",
        )
        with pytest.raises(PermanentFailure, match="credentials"):
            wrong.get_json("/recordings")


def test_unreachable_api_is_retryable() -> None:
    with httpx.Client(timeout=2, trust_env=False) as http:
        api = ApiClient(http, "http://127.0.0.1:9", {}, lambda r: "")
        with pytest.raises(RetryLater, match="unreachable"):
            api.get_json("/recordings")
