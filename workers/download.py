"""Stream one recording's audio: allowed hosts only, redirects re-checked, every byte counted.

``open_audio`` yields a ``HashingStream`` whose ``chunks()`` feed storage directly, so nothing
bigger than one chunk is held here. The stream raises instead of ending short: a connection cut
before Content-Length, a body longer than declared or than the size limit all raise
``StreamCut`` (retried with a fresh URL), never a silently shorter object. A size the provider
announced (``Download.expected_size``) that the audio does not have raises ``SizeMismatch``
from inside the stream, so storage discards the object instead of committing it (checked
before the body when ``Content-Length`` already disagrees, else after the last byte).
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
from collections.abc import Iterator

import httpx

from providers.base import Download
from providers.errors import PermanentFailure, RetryLater, UrlExpired
from providers.http import retry_after_seconds
from workers.url_guard import Resolver, check_audio_url

__all__ = ["HashingStream", "SizeMismatch", "StreamCut", "open_audio"]

CHUNK_BYTES = 256 * 1024
MAX_REDIRECTS = 3
EXPIRED_STATUSES = frozenset({401, 403, 404, 410})


class StreamCut(RetryLater):
    """The audio stream ended early or broke; a fresh URL and a new download may succeed."""


class SizeMismatch(RetryLater):
    """The audio's size is not the one the provider announced: retried later, then failed.

    Not a ``StreamCut``: the body arrived whole, so a fresh URL within the same attempt would
    most likely bring the same bytes; a later attempt may find the provider consistent again.
    """


class HashingStream:
    """The body of one audio response; sha256 and size are final once ``chunks()`` is done.

    ``announced_size`` is the provider's own size for the recording, when it gives one.
    """

    def __init__(
        self,
        response: httpx.Response,
        max_bytes: int,
        announced_size: int | None = None,
        host: str | None = None,
    ) -> None:
        self._response = response
        self._max_bytes = max_bytes
        self._hash = hashlib.sha256()
        self.size = 0
        encoding = response.headers.get("content-encoding", "identity").lower()
        self._raw = encoding in ("", "identity")
        declared = response.headers.get("content-length")
        self.expected_size = int(declared) if declared and declared.isdigit() else None
        if self.expected_size is not None and self.expected_size > max_bytes:
            raise PermanentFailure(
                f"recording of {self.expected_size} bytes exceeds the limit", "size"
            )
        self.announced_size = announced_size
        declared_differs = self._raw and self.expected_size not in (None, announced_size)
        if announced_size is not None and declared_differs:  # fail before the body is sent
            raise SizeMismatch(self._mismatch(self.expected_size))
        self.host = host or response.url.host  # the URL's host, not the address connected to

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def chunks(self) -> Iterator[bytes]:
        reader = self._response.iter_raw if self._raw else self._response.iter_bytes
        try:
            for chunk in reader(CHUNK_BYTES):
                self.size += len(chunk)
                if self.size > self._max_bytes:
                    raise PermanentFailure("recording exceeds the size limit", "size")
                self._hash.update(chunk)
                yield chunk
        except httpx.TimeoutException as exc:
            raise StreamCut(f"audio download timed out ({type(exc).__name__})") from None
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise StreamCut(f"audio download broke ({type(exc).__name__})") from None
        if self._raw and self.expected_size is not None and self.size != self.expected_size:
            raise StreamCut(f"audio body had {self.size} of {self.expected_size} bytes")
        if self.announced_size is not None and self.size != self.announced_size:
            raise SizeMismatch(self._mismatch(self.size))

    def _mismatch(self, size: int | None) -> str:
        return f"audio has {size} bytes, the provider said {self.announced_size}"


@contextlib.contextmanager
def open_audio(
    http: httpx.Client,
    download: Download,
    allowed_hosts: tuple[str, ...],
    max_bytes: int,
    *,
    resolve: Resolver = socket.getaddrinfo,
) -> Iterator[HashingStream]:
    """Open the audio URL (following at most 3 checked redirects) and yield its stream.

    Each hop connects to the address ``check_audio_url`` vetted (``resolve`` is asked once per
    hop, never again by httpx).
    """
    target = check_audio_url(download.url, allowed_hosts, resolve)
    origin = target.url
    auth = httpx.BasicAuth(*download.auth) if download.auth else None
    for _hop in range(MAX_REDIRECTS + 1):
        request = target.request(http, {"accept-encoding": "identity"})
        try:
            response = http.send(request, stream=True, auth=auth, follow_redirects=False)
        except httpx.TimeoutException as exc:
            raise StreamCut(f"audio request timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise StreamCut(f"audio host unreachable ({type(exc).__name__})") from None
        try:
            if response.is_redirect and "location" in response.headers:
                location = str(target.url.join(response.headers["location"]))
                target = check_audio_url(location, allowed_hosts, resolve)
                if not _same_origin_or_upgrade(origin, target.url):
                    auth = None  # credentials never follow a redirect to another host
                continue
            _raise_for_status(response)
            yield HashingStream(response, max_bytes, download.expected_size, target.url.host)
            return
        finally:
            response.close()
    raise PermanentFailure(f"audio URL redirected more than {MAX_REDIRECTS} times", "refused_host")


def _same_origin_or_upgrade(origin: httpx.URL, target: httpx.URL) -> bool:
    """Whether credentials sent to ``origin`` may go to ``target``: the same host and port, or
    the same host moved from http to https (Twilio redirects http media URLs to https,
    providers.md §5.4). Never another host, never a downgrade to http."""
    if target.host != origin.host:
        return False
    if target.scheme == origin.scheme:
        return target.port == origin.port
    return (origin.scheme, target.scheme) == ("http", "https")


def _raise_for_status(response: httpx.Response) -> None:
    status = response.status_code
    if status == 200:
        return
    if status in EXPIRED_STATUSES:
        raise UrlExpired(f"audio URL refused with HTTP {status}")
    if status in (408, 425, 429) or status >= 500:
        wait = retry_after_seconds(response.headers, rate_limited=status == 429)
        raise RetryLater(f"audio host answered HTTP {status}", wait)
    raise PermanentFailure(f"audio host answered HTTP {status}")
