# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Typed errors of the KSeF client, shared with the Tryton layer.

Every error carries a stable machine ``code`` (the Tryton layer shows the
translated message ``ksef.msg_<code>`` filled with ``params``), a dict of
``params`` holding only plain values, and an English ``str()`` for the CLI
and for logs.

The one question a caller must answer about a failure is "try again later,
or tell the user?": ``error.transient`` says it.  Transient errors are the
network, timeouts, KSeF's 5xx, rate limiting (429, see ``retry_after``), an
outcome that is unknown because the answer was lost, a wait that ran out
before KSeF finished, and a session that KSeF closed (the document was not
taken: send it again in a new session).  Everything else is definitive:
KSeF looked at the request and said no, with its own exception code.

No error ever holds a token, a key, a password or invoice content; the
texts KSeF itself returns (exception descriptions and details, which say
what to correct) are kept because the user needs them.
"""

__all__ = [
    'KSeFError', 'TransientError',
    'NetworkError', 'RequestTimeout', 'ServerError', 'RateLimited',
    'OutcomeUnknown', 'StillProcessing', 'SessionClosed',
    'APIError', 'ExceptionDetail', 'PublicKeyRejected',
    'AuthenticationRequired', 'Forbidden', 'Gone', 'HTTPError',
    'ProtocolError', 'AuthenticationFailed', 'InvoiceRejected',
    'DuplicateInvoice', 'SessionFailed', 'NoPublicKey',
    'BatchLimitExceeded', 'ConfigurationError', 'is_transient',
    ]


class _Params(dict):
    "Format mapping that leaves unknown fields visible instead of failing."

    def __missing__(self, key):
        return '{%s}' % key


class KSeFError(Exception):
    """Base of every error raised by the KSeF client.

    ``code`` is stable and machine readable, ``params`` holds the values of
    the message (plain str/int/float/None/bool only).
    """
    code = 'ksef_error'
    message = "KSeF error"
    transient = False
    #: Seconds after which trying again makes sense, when known.
    retry_after = None

    def __init__(self, message=None, **params):
        self.params = {k: v for k, v in params.items()}
        if message is not None:
            self.message = message
        super().__init__(self.code)

    def __str__(self):
        return self.message.format_map(_Params(self.params))

    def __repr__(self):
        return '%s(%r)' % (type(self).__name__, str(self))


def is_transient(error):
    "Whether `error` is worth trying again later without any change."
    return bool(getattr(error, 'transient', False))


class TransientError(KSeFError):
    "Try again later: nothing is wrong with the request itself."
    code = 'ksef_transient'
    message = "KSeF is temporarily unavailable ({operation})"
    transient = True


class NetworkError(TransientError):
    "KSeF could not be reached, or the connection broke."
    code = 'ksef_network_error'
    message = "Could not reach KSeF ({operation}): {reason}"


class RequestTimeout(TransientError):
    "KSeF did not answer in time."
    code = 'ksef_timeout'
    message = "KSeF did not answer in time ({operation})"


class ServerError(TransientError):
    "KSeF answered with a 5xx status."
    code = 'ksef_server_error'
    message = "KSeF server error {status} ({operation})"


class RateLimited(TransientError):
    "KSeF refused the request for now (HTTP 429): too many requests."
    code = 'ksef_rate_limited'
    message = ("KSeF rate limit reached ({operation}); try again in "
        "{retry_after} s")

    def __init__(self, message=None, *, retry_after=None, **params):
        super().__init__(message, retry_after=retry_after, **params)
        self.retry_after = retry_after


class OutcomeUnknown(TransientError):
    """A request that creates something (a session, an invoice) may have
    reached KSeF, but its answer was lost: do not send it blindly again,
    reconcile first (session status, the session's invoice list by
    invoice hash, or a resend that KSeF answers with duplicate 440)."""
    code = 'ksef_outcome_unknown'
    message = ("The outcome of {operation} is unknown ({reason}); check "
        "its status in KSeF before trying again")


class StillProcessing(TransientError):
    "A bounded wait ended before KSeF reached a final status."
    code = 'ksef_still_processing'
    message = ("KSeF is still processing {operation} {reference} (status "
        "{status_code}); check again later")


class ExceptionDetail:
    "One entry of KSeF's exception list: numeric code, text, details."
    __slots__ = ('code', 'description', 'details')

    def __init__(self, code, description='', details=()):
        self.code = code
        self.description = description or ''
        self.details = tuple(details or ())

    def __repr__(self):
        return 'ExceptionDetail(%r, %r, %r)' % (
            self.code, self.description, self.details)

    def __eq__(self, other):
        return (isinstance(other, ExceptionDetail)
            and (self.code, self.description, self.details)
            == (other.code, other.description, other.details))

    def __hash__(self):
        return hash((self.code, self.description, self.details))


class APIError(KSeFError):
    """KSeF rejected the request (HTTP 400) with one or more exception
    codes, e.g. 21405 input validation, 9105 invalid signature."""
    code = 'ksef_api_error'
    message = ("KSeF rejected {operation} (code {exception_code}): "
        "{description}{details_text}")

    def __init__(self, message=None, *, errors=(), **params):
        errors = tuple(errors)
        first = errors[0] if errors else ExceptionDetail(None)
        params.setdefault('exception_code', first.code)
        params.setdefault('description', first.description)
        params.setdefault('details', '; '.join(first.details))
        params.setdefault('details_text',
            ' (%s)' % params['details'] if params['details'] else '')
        super().__init__(message, **params)
        self.errors = errors

    @property
    def exception_codes(self):
        return tuple(e.code for e in self.errors)


class SessionClosed(TransientError, APIError):
    """The session cannot take the request any more (KSeF closed it, it
    expired, it is full or unknown): open a new session and send again."""
    code = 'ksef_session_closed'
    message = ("KSeF session {session} no longer accepts documents "
        "({reason})")


class PublicKeyRejected(APIError):
    "KSeF does not know the Ministry key used (21470) even after a refresh."
    code = 'ksef_public_key_rejected'


class AuthenticationRequired(KSeFError):
    """No usable access: the tokens expired or were revoked and no
    credentials were given to authenticate again."""
    code = 'ksef_authentication_required'
    message = "KSeF authentication required ({reason})"


class Forbidden(KSeFError):
    "HTTP 403: the authenticated subject may not do this."
    code = 'ksef_forbidden'
    message = "KSeF refused {operation}: {reason_code} {detail}"


class Gone(KSeFError):
    "HTTP 410: the status asked for is past KSeF's retention."
    code = 'ksef_gone'
    message = "KSeF no longer keeps the status of {operation}"


class HTTPError(KSeFError):
    "Any other unexpected HTTP status."
    code = 'ksef_http_error'
    message = "KSeF answered HTTP {status} to {operation}"


class ProtocolError(KSeFError):
    "KSeF's answer does not have the documented shape."
    code = 'ksef_protocol_error'
    message = "Unexpected answer from KSeF to {operation}: {reason}"


# Final statuses that say "KSeF failed", not "KSeF refused": 500 unknown
# error, 550 operation cancelled by the system (PROTOCOL.md §4.4, §8).
# Trying again is the documented remedy for 550; for 500 it is harmless
# (a resent invoice already accepted is answered as a duplicate, 440).
TRANSIENT_STATUS_CODES = (500, 550)


class AuthenticationFailed(KSeFError):
    """The authentication operation ended with a failure status
    (415 no permissions, 450 bad token, 460 certificate error, ...).
    Statuses 500 and 550 are transient."""
    code = 'ksef_authentication_failed'
    message = ("KSeF authentication failed (status {status_code}): "
        "{description}{details_text}")

    def __init__(self, message=None, **params):
        params.setdefault('details_text',
            ' (%s)' % params['details'] if params.get('details') else '')
        super().__init__(message, **params)
        self.transient = params.get('status_code') in TRANSIENT_STATUS_CODES


class InvoiceRejected(KSeFError):
    """KSeF processed the invoice and refused it (status 4xx/5xx):
    e.g. 430 schema error, 450 semantic error; 500 and 550 are
    transient."""
    code = 'ksef_invoice_rejected'
    message = ("KSeF rejected invoice {invoice_reference} (status "
        "{status_code}): {description}{details_text}")

    def __init__(self, message=None, **params):
        params.setdefault('details_text',
            ' (%s)' % params['details'] if params.get('details') else '')
        super().__init__(message, **params)
        self.transient = params.get('status_code') in TRANSIENT_STATUS_CODES


class DuplicateInvoice(InvoiceRejected):
    """Status 440: the same seller, type and number is already in KSeF,
    as ``original_ksef_number`` (after a lost answer, often our own)."""
    code = 'ksef_invoice_duplicate'
    message = ("Invoice {invoice_reference} is a duplicate of KSeF "
        "number {original_ksef_number}")


class SessionFailed(KSeFError):
    """The session ended in a failure status (415 key decryption, 440
    cancelled, 445 no valid invoice, 405/430/435 package errors, ...);
    500 (unknown error) is transient."""
    code = 'ksef_session_failed'
    message = ("KSeF session {session} failed (status {status_code}): "
        "{description}{details_text}")

    def __init__(self, message=None, **params):
        params.setdefault('details_text',
            ' (%s)' % params['details'] if params.get('details') else '')
        super().__init__(message, **params)
        self.transient = params.get('status_code') == 500


class NoPublicKey(KSeFError):
    "KSeF lists no valid Ministry certificate for this usage."
    code = 'ksef_no_public_key'
    message = "KSeF publishes no valid public key for {usage}"


class BatchLimitExceeded(KSeFError):
    "The batch would exceed a KSeF package limit (parts, size, invoices)."
    code = 'ksef_batch_limit'
    message = "The batch exceeds the KSeF limit on {limit} ({value} > {max})"


class ConfigurationError(KSeFError):
    "The client was called with unusable settings or arguments."
    code = 'ksef_configuration'
    message = "Invalid KSeF client configuration: {reason}"
