"""A polite HTTP client for crawling comment sources.

``PoliteSession`` is a ``requests.Session`` that

- spaces requests to one host by at least ``min_interval_s`` (start to start, retries included),
- applies a default timeout to every request and sends a crawler User-Agent,
- loads an optional Netscape ``cookies.txt`` (a login cookie such as Bilibili's ``SESSDATA``
  unlocks full comment history),
- and, through ``fetch``, retries transient failures with exponential back-off and jitter
  (tenacity): HTTP 408/412/425/429/5xx, timeouts, connection errors and resets, and bodies
  shorter than their Content-Length. ``Retry-After`` is honoured up to a bound. When the attempt
  budget is spent it raises ``FetchError`` naming the URL and the last reason.

Cookies are secrets: every URL, header or message this module logs or puts into an exception
goes through ``mask`` first, which hides secret-looking ``name=value`` pairs and the values of
every cookie loaded from the cookie file.
"""

from __future__ import annotations

import email.utils
import http.cookiejar
import logging
import re
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import urlsplit

import requests
import tenacity

log = logging.getLogger(__name__)

DEFAULT_USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Safari/537.36 lcaffect-pipeline/0.1"
)
# Statuses worth another try: timeouts, Bilibili's anti-crawler 412, rate limits, server errors.
RETRY_STATUSES = frozenset({408, 412, 425, 429})
SECRET_HEADERS = frozenset({"cookie", "set-cookie", "authorization", "proxy-authorization"})
# A parameter or cookie name that looks secret: SESSDATA, bili_jct, access_key, token, ...
_SECRET_NAME = r"[\w.-]*(?:sess|token|key|secret|passw|sign|auth|cookie|csrf|jct|sid|userid)[\w.-]*"
_SECRET_PAIR = re.compile(rf"(?i)\b({_SECRET_NAME})=([^&;\s'\"]+)")
MASK = "***"


class FetchError(RuntimeError):
    """A URL could not be fetched; ``url`` and ``reason`` are free of secrets."""

    def __init__(self, url: str, reason: str, *, status: int | None = None, attempts: int = 1):
        self.url, self.reason, self.status, self.attempts = url, reason, status, attempts
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        super().__init__(f"{url}: {reason}{tries}")


class RetryableError(Exception):
    """A transient failure of one attempt; ``fetch`` tries again while its budget lasts.

    A ``check`` callback passed to ``fetch`` raises it for a platform's own "slow down" answers
    (for instance Bilibili's JSON code -412 inside an HTTP 200).
    """

    def __init__(self, reason: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.status, self.retry_after = reason, status, retry_after


def mask_text(text: str, secrets: frozenset[str] | set[str] = frozenset()) -> str:
    """``text`` with secret-looking ``name=value`` pairs and any known secret value hidden."""
    text = _SECRET_PAIR.sub(lambda m: f"{m.group(1)}={MASK}", str(text))
    for value in sorted(secrets, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def mask_headers(headers: Mapping[str, str], secrets: frozenset[str] | set[str] = frozenset()) -> dict:
    return {
        k: (MASK if k.lower() in SECRET_HEADERS else mask_text(v, secrets)) for k, v in headers.items()
    }


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date); None if absent."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def load_cookie_file(path: str | Path) -> http.cookiejar.MozillaCookieJar:
    """Read a Netscape ``cookies.txt``; the error never quotes the file's lines (they are secrets)."""
    jar = http.cookiejar.MozillaCookieJar(str(path))
    try:
        jar.load(ignore_discard=True, ignore_expires=True)
    except http.cookiejar.LoadError:
        raise ValueError(
            f"cookie file {path}: not a Netscape cookies.txt (it must start with "
            "'# Netscape HTTP Cookie File' and hold tab-separated lines)"
        ) from None
    except OSError as exc:
        raise ValueError(f"cookie file {path}: cannot be read ({exc.strerror})") from None
    for cookie in jar:
        # Browser exports write session cookies with expiry 0, which the stdlib reads as
        # "expired in 1970" and then never sends; yt-dlp's cookie jar makes the same correction.
        if cookie.expires == 0:
            cookie.expires, cookie.discard = None, True
    return jar


class PoliteSession(requests.Session):
    """A ``requests.Session`` that spaces, times out, retries and keeps cookies out of logs."""

    def __init__(
        self,
        *,
        min_interval_s: float = 1.0,
        timeout_s: float | tuple[float, float] = 30.0,
        attempts: int = 5,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        retry_after_max_s: float = 120.0,
        user_agent: str = DEFAULT_USER_AGENT,
        cookie_file: str | Path | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        super().__init__()
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        self.min_interval_s = float(min_interval_s)
        self.timeout = timeout_s
        self.attempts = int(attempts)
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        self.retry_after_max_s = float(retry_after_max_s)
        self.headers["User-Agent"] = user_agent
        self._sleep = sleep
        self._secrets: set[str] = set()
        self._next_slot: dict[str, float] = {}
        self._slot_lock = threading.Lock()
        if cookie_file is not None:
            self.load_cookies(cookie_file)

    # -- secrets -------------------------------------------------------------------------------
    def load_cookies(self, path: str | Path) -> int:
        """Add the cookies of a Netscape cookies.txt; returns how many were loaded."""
        jar = load_cookie_file(path)
        self.cookies.update(jar)
        # Very short values ("1", "0") are flags, not secrets; masking them would garble logs.
        self._secrets.update(c.value for c in jar if c.value and len(c.value) >= 4)
        return len(jar)

    def mask(self, text: str) -> str:
        return mask_text(text, self._secrets)

    # -- politeness ----------------------------------------------------------------------------
    def _wait_turn(self, url: str) -> None:
        """Block until this host's next slot; slots are reserved under a lock (thread-safe)."""
        host = urlsplit(url).netloc.lower()
        with self._slot_lock:
            now = time.monotonic()
            start = max(now, self._next_slot.get(host, 0.0))
            self._next_slot[host] = start + self.min_interval_s
        if start > now:
            self._sleep(start - now)

    def request(self, method, url, *args, **kwargs):  # noqa: D401 - requests' signature
        """Every request (``get``, ``post``, ``fetch``) waits its turn and has a timeout."""
        kwargs.setdefault("timeout", self.timeout)
        self._wait_turn(url)
        return super().request(method, url, *args, **kwargs)

    # -- fetching with retries -----------------------------------------------------------------
    def display_url(self, url: str, params: Mapping | None = None) -> str:
        """The URL as it will be requested, with secrets masked: the one to log or report."""
        full = requests.Request("GET", url, params=params).prepare().url or url
        return self.mask(full)

    def fetch(
        self,
        url: str,
        *,
        params: Mapping | None = None,
        headers: Mapping[str, str] | None = None,
        check: Callable[[requests.Response], None] | None = None,
    ) -> requests.Response:
        """GET ``url`` with retries; the whole body is read and checked against Content-Length.

        ``check(response)`` may raise ``RetryableError`` (try again) or ``FetchError`` (give up)
        for bodies that arrived whole but say something went wrong.
        """
        shown = self.display_url(url, params)
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=self._backoff,
            retry=tenacity.retry_if_exception_type(RetryableError),
            sleep=self._sleep,
            before_sleep=lambda state: self._log_retry(shown, state),
            reraise=True,
        )
        try:
            return retrying(self._fetch_once, url, shown, params, headers, check)
        except RetryableError as exc:
            raise FetchError(shown, exc.reason, status=exc.status, attempts=self.attempts) from None

    def get_bytes(self, url: str, **kwargs) -> bytes:
        return self.fetch(url, **kwargs).content

    def _fetch_once(self, url, shown, params, headers, check) -> requests.Response:
        log.debug("GET %s", shown)
        try:
            resp = self.get(url, params=params, headers=headers)
        except requests.Timeout as exc:
            raise RetryableError(f"timed out ({type(exc).__name__})") from None
        except requests.exceptions.ChunkedEncodingError as exc:
            # urllib3 2 raises this for a body shorter than its Content-Length.
            detail = re.search(r"IncompleteRead\([^)]*\)", str(exc))
            raise RetryableError(f"truncated body: {detail.group(0) if detail else self.mask(str(exc))}") from None
        except (requests.ConnectionError, requests.exceptions.ContentDecodingError) as exc:
            raise RetryableError(f"{type(exc).__name__}: {self.mask(str(exc))}") from None
        status = resp.status_code
        if status in RETRY_STATUSES or status >= 500:
            after = parse_retry_after(resp.headers.get("Retry-After"))
            raise RetryableError(f"HTTP {status} {resp.reason}", status=status, retry_after=after)
        if status >= 400:
            raise FetchError(shown, f"HTTP {status} {resp.reason}", status=status)
        self._check_length(resp)
        if check is not None:
            check(resp)
        return resp

    @staticmethod
    def _check_length(resp: requests.Response) -> None:
        """urllib3 2 already raises on short bodies; this also covers clients that do not."""
        declared = resp.headers.get("Content-Length")
        if declared is None or not declared.isdigit() or resp.request.method == "HEAD":
            return
        received = resp.raw.tell() if hasattr(resp.raw, "tell") else len(resp.content)
        if received < int(declared):
            raise RetryableError(f"truncated body: {received} of {declared} bytes", status=resp.status_code)

    def _backoff(self, state: tenacity.RetryCallState) -> float:
        """Exponential back-off with jitter, or the server's Retry-After (bounded) if longer."""
        wait = tenacity.wait_exponential_jitter(
            initial=self.backoff_base_s, max=self.backoff_max_s, jitter=self.backoff_base_s
        )(state)
        exc = state.outcome.exception() if state.outcome else None
        after = getattr(exc, "retry_after", None)
        if after is not None:
            wait = max(wait, min(after, self.retry_after_max_s))
        return wait

    def _log_retry(self, shown: str, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        reason = getattr(exc, "reason", str(exc))
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "%s: %s; attempt %d of %d, retrying in %.2fs",
            shown, reason, state.attempt_number, self.attempts, wait,
        )


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


__all__ = [
    "DEFAULT_USER_AGENT",
    "FetchError",
    "PoliteSession",
    "RetryableError",
    "load_cookie_file",
    "mask_headers",
    "mask_text",
    "parse_retry_after",
]
