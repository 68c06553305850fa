# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""HTTP plumbing of the KSeF client: timeouts, retries, error mapping.

Retry policy (explicit, see `RetryPolicy`):

* An *idempotent* call (GET, PUT of a batch part, DELETE, and the POSTs
  that create nothing durable: challenge, token refresh) is retried with
  exponential backoff, a bounded number of times, after a network error,
  a timeout or a 5xx answer.
* A call that *creates* something (open a session, send an invoice, close
  a session, start an authentication, redeem) is retried only when the
  request certainly did not reach KSeF: the connection could not be made,
  or broke while the request was still being written (an incomplete HTTP
  request is never processed).  If the request may have been processed (no
  answer, a broken answer, a 5xx) `OutcomeUnknown` is raised instead: the
  caller reconciles from KSeF's statuses before sending again.
* HTTP 429 means the request was *not* processed, so every kind of call
  may be repeated: when ``Retry-After`` is at most
  ``RetryPolicy.rate_limit_max_wait`` seconds (and attempts are left) the
  client sleeps and repeats; otherwise it raises `RateLimited` with
  ``retry_after`` for the caller to reschedule (e.g. a queue task).

Nothing here logs a header, a body or a query string: tokens travel in the
Authorization header and pre-signed storage URLs carry their signature in
the query.

Every answer is read with a bound (`MAX_RESPONSE_SIZE`, after decompression):
a server that never stops sending, or a compressed bomb, ends the call
with `ProtocolError` (`OutcomeUnknown` for a call that creates something)
instead of filling the memory.
"""
import email.utils
import json
import logging
import time
from dataclasses import dataclass

import httpx

from ..errors import (
    APIError,
    AuthenticationRequired,
    ConfigurationError,
    ExceptionDetail,
    Forbidden,
    Gone,
    HTTPError,
    NetworkError,
    OutcomeUnknown,
    ProtocolError,
    PublicKeyRejected,
    RateLimited,
    RequestTimeout,
    ServerError,
    SessionClosed,
)

logger = logging.getLogger('trytond_ksef.client')
# A library leaves the output to the application (logging HOWTO).
logger.addHandler(logging.NullHandler())

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=15.0, pool=15.0)
# The largest answer read, decoded.  KSeF's largest documented answers are
# session UPO pages (up to 10 000 invoices, a few MB) and invoice lists;
# xmlutil.MAX_DOCUMENT_SIZE (10 MB) is the bound of any XML we parse.
MAX_RESPONSE_SIZE = 16 * 1024 * 1024
USER_AGENT = 'trytond-ksef'

# KSeF exception codes meaning "this session takes nothing more", when
# answered to an operation that writes into a session (for a status query
# 21173 just means "no such session": an APIError).
SESSION_WRITE_OPERATIONS = {
    'send_invoice', 'close_online_session', 'close_batch_session'}
SESSION_CLOSED_CODES = {
    21155,  # session invoice limit reached
    21173,  # no session with this reference
    21180,  # session status forbids the operation
    21208,  # batch upload/close wait exceeded: session cancelled
    }
PUBLIC_KEY_UNKNOWN = 21470

# The request never left, or left incomplete: KSeF cannot have processed
# it.  A WriteError/WriteTimeout happens while the request is being
# written; a server (or proxy) does not act on an incomplete request.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
    httpx.WriteError, httpx.WriteTimeout, httpx.ProxyError)


@dataclass
class RetryPolicy:
    """How hard to try.  `max_attempts` counts every attempt of one call
    (first included); backoff is ``initial * factor ** (n - 1)`` capped by
    `backoff_max`.  A 429 whose Retry-After is at most
    `rate_limit_max_wait` seconds is waited for in-process (set 0 to
    always raise `RateLimited` at once)."""
    max_attempts: int = 4
    backoff_initial: float = 1.0
    backoff_factor: float = 2.0
    backoff_max: float = 30.0
    rate_limit_max_wait: float = 10.0

    def backoff(self, attempt):
        return min(self.backoff_max,
            self.backoff_initial * self.backoff_factor ** (attempt - 1))


def redact_url(url):
    "URL without query and fragment: safe to log."
    url = httpx.URL(str(url))
    return str(url.copy_with(query=None, fragment=None))


class _RedactHTTPXFilter(logging.Filter):
    """httpx logs every request URL at INFO level; the pre-signed storage
    URLs of batch parts and UPOs carry a signature in their query.  This
    filter, put on the 'httpx' logger, strips the query of those URLs."""

    def filter(self, record):
        if isinstance(record.args, tuple) and any(
                isinstance(a, httpx.URL) and a.query for a in record.args):
            record.args = tuple(
                a.copy_with(query=None, fragment=None)
                if isinstance(a, httpx.URL) else a for a in record.args)
        return True


def _install_httpx_filter():
    httpx_logger = logging.getLogger('httpx')
    if not any(isinstance(f, _RedactHTTPXFilter)
            for f in httpx_logger.filters):
        httpx_logger.addFilter(_RedactHTTPXFilter())


_install_httpx_filter()


def parse_retry_after(value, now=None):
    "Seconds from a Retry-After header (delta-seconds or HTTP-date)."
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0, int(float(value)))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None or now is None:
        return None
    return max(0, int((when - now).total_seconds() + 0.999))


def _exception_details(body):
    """KSeF's exception list from either error format: the legacy
    ``{"exception": {"exceptionDetailList": [...]}}`` or RFC 7807 problem
    details ``{"errors": [{"code", "description", "details"}]}``."""
    if not isinstance(body, dict):
        return ()
    details = []
    exception = body.get('exception')
    if isinstance(exception, dict):
        for item in exception.get('exceptionDetailList') or ():
            if isinstance(item, dict):
                details.append(ExceptionDetail(
                    _int(item.get('exceptionCode')),
                    item.get('exceptionDescription') or '',
                    item.get('details') or ()))
    for item in body.get('errors') or ():
        if isinstance(item, dict):
            details.append(ExceptionDetail(
                _int(item.get('code')), item.get('description') or '',
                item.get('details') or ()))
    return tuple(details)


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def _json_body(response):
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


def error_from_response(response, operation, context=None):
    "The typed error for a non-2xx answer other than 429 and 5xx."
    status = response.status_code
    body = _json_body(response)
    params = dict(context or {})
    params.update(operation=operation, status=status)
    if status == 400 or (isinstance(body, dict) and (
            body.get('exception') or body.get('errors'))
            and status not in (401, 403, 410)):
        errors = _exception_details(body)
        codes = {e.code for e in errors}
        if PUBLIC_KEY_UNKNOWN in codes:
            return PublicKeyRejected(errors=errors, **params)
        if (codes & SESSION_CLOSED_CODES and 'session' in params
                and operation in SESSION_WRITE_OPERATIONS):
            first = next(e for e in errors if e.code in SESSION_CLOSED_CODES)
            params.setdefault('reason', '%s %s' % (
                first.code, first.description))
            return SessionClosed(errors=(first,) + tuple(
                e for e in errors if e is not first), **params)
        return APIError(errors=errors, **params)
    detail = body.get('detail') if isinstance(body, dict) else None
    if status == 401:
        return AuthenticationRequired(reason='unauthorized', detail=detail,
            **params)
    if status == 403:
        return Forbidden(
            reason_code=(body.get('reasonCode') or ''
                if isinstance(body, dict) else ''),
            detail=detail or '', **params)
    if status == 410:
        return Gone(detail=detail, **params)
    return HTTPError(detail=detail, **params)


class _TooLarge(Exception):
    "An answer longer than the bound (internal)."


def _read_bounded(response, limit):
    """Read the body of a streamed `response`, decoded, refusing more than
    `limit` bytes; the content is then available as with a normal read."""
    length = response.headers.get('Content-Length')
    if length and length.strip().isdigit() and int(length) > limit:
        raise _TooLarge()
    chunks = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise _TooLarge()
        chunks.append(chunk)
    # What httpx.Response.read() stores; .content and .json() use it.
    response._content = b''.join(chunks)
    return response


class HTTP:
    """One httpx.Client plus the policy; shared by the API client and the
    status-service client."""

    def __init__(self, *, transport=None, timeout=None, retry=None,
            clock=None, sleep=None, user_agent=None, client=None,
            max_response_size=MAX_RESPONSE_SIZE):
        self.max_response_size = max_response_size
        self.timeout = timeout if timeout is not None else DEFAULT_TIMEOUT
        if not isinstance(self.timeout, httpx.Timeout):
            self.timeout = httpx.Timeout(self.timeout)
        self.retry = retry or RetryPolicy()
        self.clock = clock
        self.sleep = sleep or time.sleep
        self._own_client = client is None
        self.client = client or httpx.Client(
            transport=transport, timeout=self.timeout,
            follow_redirects=False,
            headers={'User-Agent': user_agent or USER_AGENT})

    def close(self):
        if self._own_client:
            self.client.close()

    def request(self, method, url, *, operation, creates=False,
            headers=None, json_body=None, content=None,
            content_factory=None, params=None, context=None,
            timeout=None):
        """Send one logical request, with the retries the policy allows.

        Returns the 2xx httpx.Response; raises a KSeFError otherwise.
        `content_factory` gives a fresh body iterator per attempt (batch
        parts streamed from disk).  `context` adds params to errors (e.g.
        the session reference).
        """
        attempt = 0
        context = dict(context or {})
        while True:
            attempt += 1
            body = content
            if content_factory is not None:
                body = content_factory()
            if json_body is not None:
                body = json.dumps(json_body, separators=(',', ':'),
                    ensure_ascii=False).encode('utf-8')
                headers = dict(headers or {})
                headers.setdefault('Content-Type', 'application/json')
            start = time.monotonic()
            try:
                response = self._send(method, url, headers=headers,
                    content=body, params=params,
                    timeout=timeout if timeout is not None
                    else self.timeout)
            except _TooLarge:
                logger.warning("KSeF %s %s: answer larger than %d bytes"
                    " (attempt %d)", method, redact_url(url),
                    self.max_response_size, attempt)
                reason = 'answer larger than %d bytes' % (
                    self.max_response_size)
                if creates:
                    raise OutcomeUnknown(operation=operation,
                        reason=reason, **context) from None
                raise ProtocolError(operation=operation, reason=reason,
                    **context) from None
            except httpx.HTTPError as exc:
                sent = not isinstance(exc, _NOT_SENT)
                reason = type(exc).__name__
                logger.warning("KSeF %s %s: %s (attempt %d)",
                    method, redact_url(url), reason, attempt)
                if isinstance(exc, httpx.UnsupportedProtocol):
                    raise ConfigurationError(
                        reason='unsupported URL scheme') from None
                if sent and creates:
                    raise OutcomeUnknown(operation=operation,
                        reason=reason, **context) from None
                if attempt < self.retry.max_attempts:
                    self.sleep(self.retry.backoff(attempt))
                    continue
                if isinstance(exc, httpx.TimeoutException):
                    raise RequestTimeout(operation=operation,
                        reason=reason, **context) from None
                raise NetworkError(operation=operation, reason=reason,
                    **context) from None
            elapsed = (time.monotonic() - start) * 1000
            status = response.status_code
            logger.debug("KSeF %s %s -> %d (%.0f ms, attempt %d)",
                method, redact_url(url), status, elapsed, attempt)
            warning = response.headers.get('X-System-Warning')
            if warning:
                logger.warning("KSeF system warning on %s: %s",
                    operation, warning)
            if 200 <= status < 300:
                return response
            if status == 429:
                now = self.clock() if self.clock else None
                retry_after = parse_retry_after(
                    response.headers.get('Retry-After'), now)
                wait = (retry_after if retry_after is not None
                    else self.retry.backoff(attempt))
                logger.info("KSeF rate limit on %s: retry after %s s",
                    operation, retry_after)
                if (attempt < self.retry.max_attempts
                        and wait <= self.retry.rate_limit_max_wait):
                    self.sleep(wait)
                    continue
                raise RateLimited(operation=operation,
                    retry_after=retry_after, **context)
            if status >= 500:
                if creates:
                    raise OutcomeUnknown(operation=operation,
                        reason='HTTP %d' % status, status=status,
                        **context)
                if attempt < self.retry.max_attempts:
                    self.sleep(self.retry.backoff(attempt))
                    continue
                raise ServerError(operation=operation, status=status,
                    **context)
            error = error_from_response(response, operation, context)
            logger.info("KSeF %s %s -> %d %s", method, redact_url(url),
                status, error.code)
            raise error

    def _send(self, method, url, **kwargs):
        """Send one request and read its answer within the size bound
        (the connection goes back to the pool either way)."""
        request = self.client.build_request(method, url, **kwargs)
        response = self.client.send(request, stream=True)
        try:
            return _read_bounded(response, self.max_response_size)
        finally:
            response.close()

    def json(self, response, *, operation, creates=False, context=None):
        """Decode a 2xx JSON answer.  For a creating call an unreadable
        answer means the outcome is unknown (it was accepted, but we do not
        know under which reference)."""
        body = _json_body(response)
        if body is None:
            if creates:
                raise OutcomeUnknown(operation=operation,
                    reason='unreadable answer', **(context or {}))
            raise ProtocolError(operation=operation,
                reason='answer is not JSON', **(context or {}))
        return body
