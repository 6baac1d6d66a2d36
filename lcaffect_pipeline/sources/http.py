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

Nothing the server says is trusted (see ``limits``): a body is refused beyond ``max_bytes`` on
the wire or after decompression (``ResponseTooLarge``), each attempt has a total deadline
(``deadline_s``) besides the per-read timeout, the spacing is booked per host in lock files
shared by every process (``slots_dir``) and holds for each redirect hop, at most
``max_redirects`` are followed, and only to the same host or one in ``redirect_hosts``.

Cookies are secrets: every cookie value loaded from a cookie file is registered, and
``mask_text`` hides registered values (also URL-encoded) and secret-looking ``name=value``
pairs. ``FetchError`` masks its URL and reason when it is made, and the crawler's loggers
(``masked_logger``) mask every record, so a value the server echoes back (in an error message
or a redirect URL) leaves neither in errors nor in logs.
"""

from __future__ import annotations

import email.utils
import http.cookiejar
import logging
import re
import threading
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import quote, quote_plus, unquote, urljoin, urlsplit

import requests
import tenacity
import urllib3

from lcaffect_pipeline.sources.limits import (
    MiB,
    CHUNK,
    Deadline,
    DeadlineAdapter,
    DeadlinePassed,
    HostSlots,
    LimitExceeded,
    read_body,
)

DEFAULT_USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Safari/537.36 lcaffect-pipeline/0.1"
)
# Statuses worth another try: timeouts, Bilibili's anti-crawler 412, rate limits, server errors.
RETRY_STATUSES = frozenset({408, 412, 425, 429})
# A parameter or cookie name that looks secret: SESSDATA, bili_jct, access_key, token, ...
_SECRET_NAME = r"[\w.-]*(?:sess|token|key|secret|passw|sign|auth|cookie|csrf|jct|sid|userid)[\w.-]*"
_SECRET_PAIR = re.compile(rf"(?i)\b({_SECRET_NAME})=([^&;\s'\"]+)")
MASK = "***"
DEFAULT_MAX_BYTES = 64 * MiB

# Cookie values loaded anywhere in this process: ``mask_text`` hides them in every string.
_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()


def register_secrets(values) -> None:
    """Remember secret values (and their URL-encoded forms) for ``mask_text``.

    Very short values ("1", "0") are flags, not secrets; masking them would garble logs.
    """
    forms = set()
    for value in values:
        if value and len(value) >= 4:
            forms |= {value, unquote(value), quote(value, safe=""), quote_plus(value)}
    with _SECRETS_LOCK:
        _SECRETS.update(f for f in forms if len(f) >= 4)


def mask_text(text: str, secrets: frozenset[str] | set[str] = frozenset()) -> str:
    """``text`` with secret-looking ``name=value`` pairs and every known secret value hidden."""
    text = _SECRET_PAIR.sub(lambda m: f"{m.group(1)}={MASK}", str(text))
    with _SECRETS_LOCK:
        known = _SECRETS | set(secrets)
    for value in sorted(known, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def mask_obj(obj):
    """``mask_text`` over every string inside dicts and lists (manifest metadata)."""
    if isinstance(obj, str):
        return mask_text(obj)
    if isinstance(obj, dict):
        return {mask_obj(k): mask_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [mask_obj(v) for v in obj]
    return obj


class _MaskFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def masked_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` whose records are masked (filters do not pass to children)."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, _MaskFilter) for f in logger.filters):
        logger.addFilter(_MaskFilter())
    return logger


log = masked_logger(__name__)
# urllib3 logs each request line (redirect targets included) at DEBUG: mask those too.
masked_logger("urllib3.connectionpool")


class FetchError(RuntimeError):
    """A URL could not be fetched; ``url`` and ``reason`` are masked when the error is made.

    ``transient``: the last reason was one worth retrying later (rate limit, server error,
    timeout) rather than an answer that will not change (404, a malformed reply).
    """

    def __init__(self, url: str, reason: str, *, status: int | None = None, attempts: int = 1, transient: bool = False):
        url, reason = mask_text(url), mask_text(reason)
        self.url, self.reason, self.status, self.attempts, self.transient = url, reason, status, attempts, transient
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        super().__init__(f"{url}: {reason}{tries}")

    def __reduce__(self):
        return (_rebuild_fetch_error, (type(self), self.url, self.reason, self.status, self.attempts, self.transient))


def _rebuild_fetch_error(cls, url, reason, status, attempts, transient):
    return cls(url, reason, status=status, attempts=attempts, transient=transient)


class ResponseTooLarge(FetchError):
    """A reply over the size cap, on the wire or after decompression."""


class RedirectRefused(FetchError):
    """A redirect to another host (not configured), to another scheme, or one too many."""


class RetryableError(Exception):
    """A transient failure of one attempt; ``fetch`` tries again while its budget lasts.

    A ``check`` callback passed to ``fetch`` raises it for a platform's own "slow down" answers
    (for instance Bilibili's JSON code -412 inside an HTTP 200).
    """

    def __init__(self, reason: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.status, self.retry_after = reason, status, retry_after


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
    register_secrets(c.value for c in jar)
    return jar


class PoliteSession(requests.Session):
    """A ``requests.Session`` that spaces, bounds, retries and keeps cookies out of logs."""

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
        max_bytes: int = DEFAULT_MAX_BYTES,
        deadline_s: float = 120.0,
        max_redirects: int = 5,
        redirect_hosts: tuple[str, ...] = (),
        slots_dir: str | Path | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        super().__init__()
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        if max_bytes < 1 or deadline_s <= 0:
            raise ValueError(f"max_bytes and deadline_s must be positive, got {max_bytes} and {deadline_s}")
        self.min_interval_s = float(min_interval_s)
        self.timeout = timeout_s
        self.attempts = int(attempts)
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        self.retry_after_max_s = float(retry_after_max_s)
        self.max_bytes = int(max_bytes)
        self.deadline_s = float(deadline_s)
        self.max_redirects = int(max_redirects)
        self.redirect_hosts = frozenset(h.lower() for h in redirect_hosts)
        self.headers["User-Agent"] = user_agent
        self.headers["Accept-Encoding"] = "gzip, deflate"  # what read_body can inflate within bounds
        self._sleep = sleep
        self._secrets: set[str] = set()
        self._slots = HostSlots(self.min_interval_s, slots_dir, sleep=sleep)
        for prefix in ("http://", "https://"):
            self.mount(prefix, DeadlineAdapter())
        if cookie_file is not None:
            self.load_cookies(cookie_file)

    # -- secrets -------------------------------------------------------------------------------
    def load_cookies(self, path: str | Path) -> int:
        """Add the cookies of a Netscape cookies.txt; returns how many were loaded."""
        jar = load_cookie_file(path)  # registers the values for mask_text
        self.cookies.update(jar)
        self._secrets.update(c.value for c in jar if c.value and len(c.value) >= 4)
        return len(jar)

    def mask(self, text: str) -> str:
        return mask_text(text, self._secrets)

    # -- politeness ----------------------------------------------------------------------------
    def request(self, method, url, *args, **kwargs):  # noqa: D401 - requests' signature
        """Every request (``get``, ``post``, ``fetch``) has a timeout."""
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, *args, **kwargs)

    def send(self, request, **kwargs):
        """Every request sent, redirect hops included, waits for its host's next slot."""
        self._slots.wait(request.url)
        return super().send(request, **kwargs)

    def get_redirect_target(self, resp):
        """The next hop, if it stays on the same host (or one in ``redirect_hosts``) over http(s)."""
        target = super().get_redirect_target(resp)
        if target is not None:
            nxt, here = urlsplit(urljoin(resp.url, target)), urlsplit(resp.url)
            if nxt.scheme not in ("http", "https"):
                raise RedirectRefused(resp.url, f"redirect to a {nxt.scheme or 'relative'}: URL refused")
            host = (nxt.hostname or "").lower()
            if host != (here.hostname or "").lower() and host not in self.redirect_hosts:
                raise RedirectRefused(
                    resp.url, f"redirect to another host {host!r} refused (add it to crawler redirect_hosts to allow it)"
                )
        return target

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
        """GET ``url`` with retries; the whole body is read within the size cap and deadline,
        and checked against its Content-Length.

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
            raise FetchError(shown, exc.reason, status=exc.status, attempts=self.attempts, transient=True) from None

    def _fetch_once(self, url, shown, params, headers, check) -> requests.Response:
        log.debug("GET %s", shown)
        with Deadline(self.deadline_s) as deadline:
            try:
                resp = self._get_whole(url, shown, params, headers, deadline)
                if check is not None:
                    check(resp)
                return resp
            except LimitExceeded as exc:
                raise ResponseTooLarge(shown, exc.reason) from None
            except requests.TooManyRedirects:
                raise RedirectRefused(shown, f"more than {self.max_redirects} redirects (a redirect loop?)") from None
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, zlib.error, DeadlinePassed) as exc:
                if deadline.expired:
                    raise RetryableError(f"no complete answer within the {self.deadline_s:g} s deadline (deadline_s)") from None
                raise self._transient(exc) from None

    def _get_whole(self, url, shown, params, headers, deadline: Deadline) -> requests.Response:
        resp = self.get(url, params=params, headers=headers, stream=True)
        try:
            status = resp.status_code
            if status in RETRY_STATUSES or status >= 500:
                after = parse_retry_after(resp.headers.get("Retry-After"))
                raise RetryableError(f"HTTP {status} {resp.reason}", status=status, retry_after=after)
            if status >= 400:
                raise FetchError(shown, f"HTTP {status} {resp.reason}", status=status)
            body, _ = read_body(
                resp.raw.stream(CHUNK, decode_content=False),
                encoding=resp.headers.get("Content-Encoding", ""),
                declared=resp.headers.get("Content-Length"),
                max_bytes=self.max_bytes,
                deadline=deadline,
            )
            deadline.check()  # a cut socket can look like a short, complete answer
            self._check_length(resp)
        finally:
            resp.close()
        resp._content, resp._content_consumed = body, True  # .content and .json() read the checked body
        return resp

    def _transient(self, exc: BaseException) -> "RetryableError":
        if isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)):
            return RetryableError(f"timed out ({type(exc).__name__})")
        detail = re.search(r"IncompleteRead\([^)]*\)", str(exc))
        if detail:  # urllib3 2 raises this for a body shorter than its Content-Length
            return RetryableError(f"truncated body: {detail.group(0)}")
        return RetryableError(f"{type(exc).__name__}: {self.mask(str(exc))}")

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
    "RedirectRefused",
    "ResponseTooLarge",
    "RetryableError",
    "load_cookie_file",
    "mask_obj",
    "mask_text",
    "masked_logger",
    "parse_retry_after",
    "register_secrets",
]
