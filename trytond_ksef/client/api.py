# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The KSeF 2.0 API client (PROTOCOL.md §2-§10, §16).

One `KSeFClient` talks to one environment on behalf of one context (e.g.
a company NIP).  It keeps the Ministry's public keys, the access/refresh
tokens (`AuthTokens`, handed to ``on_tokens`` whenever they change so that
the caller can persist them) and, when given `credentials`, authenticates
again by itself when the refresh token is gone.

Every method is synchronous and bounded in time: each HTTP call has a
timeout, retries are bounded (`RetryPolicy`) and status waits end with
`StillProcessing` after their timeout (`PollPolicy`), so they are safe to
call from queue tasks and crons.
"""
import datetime as _dt
import logging
import time
from dataclasses import dataclass
from urllib.parse import quote

from .. import crypto, xmlutil
from ..errors import (
    APIError,
    AuthenticationFailed,
    AuthenticationRequired,
    ConfigurationError,
    NoPublicKey,
    OutcomeUnknown,
    ProtocolError,
    PublicKeyRejected,
    SessionClosed,
    StillProcessing,
)
from ._http import HTTP, redact_url
from .models import (
    FA3,
    AuthOperation,
    AuthStatus,
    AuthTokens,
    BatchSession,
    CertificateCredentials,
    Challenge,
    ContextIdentifier,
    InvoiceStatus,
    KSeFStatus,
    OnlineSession,
    PartUpload,
    PublicKeyCertificate,
    SentInvoice,
    SessionStatus,
    StatusMessage,
    TokenCredentials,
    Upo,
    parse_datetime,
)

__all__ = ['KSeFClient', 'KSeFStatusClient', 'PollPolicy']

logger = logging.getLogger('trytond_ksef.client')

KSEF_TOKEN_ENCRYPTION = PublicKeyCertificate.KSEF_TOKEN_ENCRYPTION
SYMMETRIC_KEY_ENCRYPTION = PublicKeyCertificate.SYMMETRIC_KEY_ENCRYPTION

_ACCESS = object()


def _utcnow():
    return _dt.datetime.now(_dt.timezone.utc)


def _q(value):
    "Quote one path segment (references and KSeF numbers)."
    return quote(str(value), safe='')


@dataclass
class PollPolicy:
    """How to wait for asynchronous KSeF statuses: the interval starts at
    `interval`, grows by `factor` up to `max_interval`; each kind of wait
    gives up after its timeout (seconds) with `StillProcessing`."""
    interval: float = 1.0
    factor: float = 1.5
    max_interval: float = 10.0
    # On DEMO/PROD the certificate is checked by OCSP/CRL at its issuer:
    # authentication may stay "in progress" for a while (PROTOCOL.md §4.4).
    auth_timeout: float = 120.0
    invoice_timeout: float = 120.0
    session_timeout: float = 600.0


class _Base:
    def __init__(self, *, transport=None, timeout=None, retry=None,
            clock=None, sleep=None, user_agent=None, http=None):
        self.clock = clock or _utcnow
        self.sleep = sleep or time.sleep
        self._owns_http = http is None
        self.http = http or HTTP(transport=transport, timeout=timeout,
            retry=retry, clock=self.clock, sleep=self.sleep,
            user_agent=user_agent)

    def now(self):
        return self.clock()

    def close(self):
        if self._owns_http:
            self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class KSeFStatusClient(_Base):
    """The KSeF status service "Latarnia" (PROTOCOL.md §21): current state
    and the published failure/maintenance messages.  No authentication.

    [DOCS SILENT] the service is not in the Ministry's API documentation;
    paths ``/status`` and ``/messages`` follow public third-party clients.
    """

    def __init__(self, status_url, **kwargs):
        super().__init__(**kwargs)
        self.status_url = status_url.rstrip('/')

    def _get(self, path, operation):
        response = self.http.request('GET', self.status_url + path,
            operation=operation, headers={'Accept': 'application/json'})
        return self.http.json(response, operation=operation)

    def get_status(self):
        "Return a `KSeFStatus` (state and the messages behind it)."
        data = self._get('/status', 'ksef_status')
        if not isinstance(data, dict) or not data.get('status'):
            raise ProtocolError(operation='ksef_status',
                reason='no status in answer')
        try:
            return KSeFStatus(
                state=str(data['status']),
                messages=self._messages(data.get('messages')))
        except (TypeError, ValueError, AttributeError) as exc:
            raise ProtocolError(operation='ksef_status',
                reason=type(exc).__name__) from None

    def get_messages(self):
        "Return all published messages, as a tuple of `StatusMessage`."
        data = self._get('/messages', 'ksef_status_messages')
        if isinstance(data, dict):
            data = data.get('messages')
        try:
            return self._messages(data)
        except (TypeError, ValueError, AttributeError) as exc:
            raise ProtocolError(operation='ksef_status_messages',
                reason=type(exc).__name__) from None

    @staticmethod
    def _messages(items):
        if items is None:
            return ()
        if not isinstance(items, list):
            raise TypeError('messages is not a list')
        return tuple(StatusMessage.from_json(m) for m in items)


class KSeFClient(_Base):
    """Client of the KSeF 2.0 API.

    :param api_url: base URL, e.g. ``https://api-test.ksef.mf.gov.pl/v2``
        (see `for_environment`).
    :param status_url: base URL of the status service (optional).
    :param transport: an ``httpx.BaseTransport`` (tests, proxies).
    :param timeout: ``httpx.Timeout`` or seconds, for every HTTP call.
    :param retry: `RetryPolicy`; :param poll: `PollPolicy`.
    :param clock: callable returning an aware UTC datetime;
        :param sleep: callable(seconds) -- both injectable for tests.
    :param tokens: `AuthTokens` from an earlier authentication to reuse.
    :param credentials: `CertificateCredentials` or `TokenCredentials`
        used to authenticate when no usable tokens are left.
    :param on_tokens: callable(AuthTokens or None) called whenever the
        tokens change (authenticate, refresh, revoke).
    :param token_margin: seconds before expiry a token is renewed.
    :param public_key_ttl: seconds the Ministry key list is cached.
    """

    def __init__(self, api_url, *, status_url=None, transport=None,
            timeout=None, retry=None, poll=None, clock=None, sleep=None,
            tokens=None, credentials=None, on_tokens=None,
            token_margin=60, public_key_ttl=6 * 3600, user_agent=None,
            problem_details=True):
        super().__init__(transport=transport, timeout=timeout, retry=retry,
            clock=clock, sleep=sleep, user_agent=user_agent)
        if not api_url:
            raise ConfigurationError(reason="no KSeF API URL")
        self.api_url = api_url.rstrip('/')
        self.status_url = status_url.rstrip('/') if status_url else None
        self.poll = poll or PollPolicy()
        self.tokens = tokens
        self.credentials = credentials
        self.on_tokens = on_tokens
        self.token_margin = token_margin
        self.public_key_ttl = public_key_ttl
        self.problem_details = problem_details
        self._public_keys = None
        self._public_keys_at = None

    def __repr__(self):
        return '<KSeFClient %s>' % self.api_url

    @classmethod
    def for_environment(cls, env, overrides=None, **kwargs):
        """A client for environment `env` ('test', 'demo', 'prod') with
        the URLs of `trytond_ksef.environments.urls(env, overrides)`."""
        from .. import environments
        urls = environments.urls(env, overrides)
        kwargs.setdefault('status_url', urls.status_url)
        return cls(urls.api_url, **kwargs)

    # ------------------------------------------------------------------
    # Low level
    # ------------------------------------------------------------------
    def _call(self, method, path, *, operation, auth=_ACCESS,
            creates=False, headers=None, accept='application/json',
            context=None, **kwargs):
        """One API call.  `auth` is _ACCESS (the access token, renewed as
        needed and once more after a 401), a token string, or None."""
        url = self.api_url + path
        renewed = False
        while True:
            request_headers = {'Accept': accept}
            if self.problem_details:
                request_headers['X-Error-Format'] = 'problem-details'
            request_headers.update(headers or {})
            if auth is _ACCESS:
                request_headers['Authorization'] = (
                    'Bearer ' + self._access_token())
            elif auth:
                request_headers['Authorization'] = 'Bearer ' + auth
            try:
                return self.http.request(method, url, operation=operation,
                    creates=creates, headers=request_headers,
                    context=context, **kwargs)
            except AuthenticationRequired:
                # 401: the request was not processed, so even a creating
                # call may be repeated once with a renewed access token.
                if auth is not _ACCESS or renewed:
                    raise
                renewed = True
                logger.info("KSeF access token refused; renewing")
                self._renew(force=True)

    def _json(self, response, operation, creates=False, context=None):
        return self.http.json(response, operation=operation,
            creates=creates, context=context)

    def _parse(self, operation, build, creates=False, context=None):
        """Run `build()` on a decoded answer; a missing or malformed field
        is a ProtocolError (OutcomeUnknown for a creating call)."""
        try:
            return build()
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            reason = 'malformed answer (%s)' % type(exc).__name__
            if creates:
                raise OutcomeUnknown(operation=operation, reason=reason,
                    **(context or {})) from None
            raise ProtocolError(operation=operation, reason=reason,
                **(context or {})) from None

    def _wait(self, fetch, *, timeout, operation, reference):
        "Poll `fetch()` until its result `is_final`, at most `timeout` s."
        start = self.now()
        interval = self.poll.interval
        while True:
            result = fetch()
            if result.is_final:
                return result
            elapsed = (self.now() - start).total_seconds()
            if elapsed >= timeout:
                raise StillProcessing(operation=operation,
                    reference=reference, status_code=result.code)
            self.sleep(max(0, min(interval, timeout - elapsed)))
            interval = min(self.poll.max_interval,
                interval * self.poll.factor)

    # ------------------------------------------------------------------
    # Ministry public keys (§3)
    # ------------------------------------------------------------------
    def fetch_public_keys(self):
        "Download and cache the Ministry's encryption certificates."
        operation = 'public_key_certificates'
        response = self._call('GET', '/security/public-key-certificates',
            operation=operation, auth=None)
        data = self._json(response, operation)
        keys = self._parse(operation, lambda: tuple(
            PublicKeyCertificate.from_json(item) for item in data))
        self._public_keys = keys
        self._public_keys_at = self.now()
        return keys

    def public_key(self, usage, refresh=False):
        """The certificate to use for `usage` ('KsefTokenEncryption' or
        'SymmetricKeyEncryption'): valid now, latest validFrom."""
        now = self.now()
        stale = (self._public_keys is None or refresh
            or (now - self._public_keys_at).total_seconds()
            > self.public_key_ttl)
        if stale:
            self.fetch_public_keys()
        choice = self._select_key(usage, now)
        if choice is None and not stale:
            self.fetch_public_keys()
            choice = self._select_key(usage, now)
        if choice is None:
            raise NoPublicKey(usage=usage)
        return choice

    def _select_key(self, usage, now):
        candidates = [k for k in self._public_keys or ()
            if usage in k.usage and k.valid_at(now)]
        if not candidates:
            return None
        return max(candidates, key=lambda k: k.valid_from)

    def _with_public_key(self, usage, action):
        """Run ``action(certificate)``; if KSeF answers 21470 (unknown or
        withdrawn key) download the list again and retry once."""
        certificate = self.public_key(usage)
        try:
            return action(certificate)
        except PublicKeyRejected:
            logger.info("KSeF rejected public key %s; reloading keys",
                certificate.public_key_id)
            certificate = self.public_key(usage, refresh=True)
            return action(certificate)

    @staticmethod
    def _encryption_json(certificate, key):
        body = {
            'encryptedSymmetricKey': crypto.b64(crypto.rsa_oaep_encrypt(
                certificate.public_key(), key.key)),
            'initializationVector': crypto.b64(key.iv),
            }
        if certificate.public_key_id:
            body['publicKeyId'] = certificate.public_key_id
        return body

    # ------------------------------------------------------------------
    # Authentication (§4)
    # ------------------------------------------------------------------
    def get_challenge(self):
        operation = 'auth_challenge'
        response = self._call('POST', '/auth/challenge', operation=operation,
            auth=None)
        data = self._json(response, operation)
        return self._parse(operation, lambda: Challenge(
            challenge=data['challenge'],
            timestamp=parse_datetime(data['timestamp']),
            timestamp_ms=int(data['timestampMs']),
            client_ip=data.get('clientIp')))

    def _auth_operation(self, response, operation):
        data = self._json(response, operation, creates=True)
        return self._parse(operation, lambda: AuthOperation(
            reference_number=data['referenceNumber'],
            authentication_token=data['authenticationToken']['token'],
            valid_until=parse_datetime(
                data['authenticationToken'].get('validUntil'))),
            creates=True)

    def submit_xades_signature(self, signed_xml,
            verify_certificate_chain=None):
        "POST the signed AuthTokenRequest; return the `AuthOperation`."
        operation = 'auth_xades_signature'
        params = None
        if verify_certificate_chain is not None:
            params = {'verifyCertificateChain':
                'true' if verify_certificate_chain else 'false'}
        response = self._call('POST', '/auth/xades-signature',
            operation=operation, auth=None, creates=True,
            headers={'Content-Type': 'application/xml'},
            content=signed_xml, params=params)
        return self._auth_operation(response, operation)

    def submit_ksef_token(self, context, ksef_token):
        """Start a KSeF-token authentication: the token and the challenge
        time, RSA-OAEP encrypted for the KsefTokenEncryption key."""
        operation = 'auth_ksef_token'
        context = _context(context)

        def attempt(certificate):
            challenge = self.get_challenge()
            plain = ('%s|%d' % (ksef_token, challenge.timestamp_ms)
                ).encode('utf-8')
            body = {
                'challenge': challenge.challenge,
                'contextIdentifier': context.to_json(),
                'encryptedToken': crypto.b64(crypto.rsa_oaep_encrypt(
                    certificate.public_key(), plain)),
                }
            if certificate.public_key_id:
                body['publicKeyId'] = certificate.public_key_id
            response = self._call('POST', '/auth/ksef-token',
                operation=operation, auth=None, creates=True,
                json_body=body)
            return self._auth_operation(response, operation)
        return self._with_public_key(KSEF_TOKEN_ENCRYPTION, attempt)

    def get_auth_status(self, operation_):
        operation = 'auth_status'
        response = self._call('GET', '/auth/%s' % _q(
                operation_.reference_number),
            operation=operation, auth=operation_.authentication_token,
            context={'reference': operation_.reference_number})
        data = self._json(response, operation)
        return self._parse(operation, lambda: AuthStatus.from_json(data))

    def wait_for_authentication(self, operation_, timeout=None):
        """Poll until the authentication is final; return its AuthStatus
        on success, raise AuthenticationFailed otherwise."""
        status = self._wait(lambda: self.get_auth_status(operation_),
            timeout=(timeout if timeout is not None
                else self.poll.auth_timeout),
            operation='authentication',
            reference=operation_.reference_number)
        if status.code != AuthStatus.SUCCESS:
            raise AuthenticationFailed(
                reference=operation_.reference_number,
                status_code=status.code,
                description=status.status.description,
                details='; '.join(status.status.details))
        return status

    def redeem(self, operation_, context=None):
        """Exchange the authentication token for access and refresh tokens
        (once only: KSeF answers 21301 to a second redeem)."""
        operation = 'auth_redeem'
        response = self._call('POST', '/auth/token/redeem',
            operation=operation, auth=operation_.authentication_token,
            creates=True)
        data = self._json(response, operation, creates=True)
        tokens = self._parse(operation, lambda: AuthTokens(
            access_token=data['accessToken']['token'],
            access_valid_until=parse_datetime(
                data['accessToken']['validUntil']),
            refresh_token=data['refreshToken']['token'],
            refresh_valid_until=parse_datetime(
                data['refreshToken']['validUntil']),
            reference_number=operation_.reference_number,
            context=context), creates=True)
        self._set_tokens(tokens)
        return tokens

    def _finish_authentication(self, operation_, context, timeout):
        self.wait_for_authentication(operation_, timeout=timeout)
        tokens = self.redeem(operation_, context)
        logger.info("KSeF authentication %s done",
            operation_.reference_number)
        return tokens

    def authenticate_with_certificate(self, context, certificate_der,
            private_key, *, subject_identifier_type='certificateSubject',
            verify_certificate_chain=None, timeout=None):
        """XAdES authentication (§4.2): challenge, signed AuthTokenRequest,
        status polling, redeem.  Returns the new `AuthTokens`."""
        from .. import xades
        context = _context(context)
        challenge = self.get_challenge()
        # trytond_ksef.xades names context types like the XML elements,
        # first letter lower case ('nip', 'internalId', ...).
        document = xades.build_auth_token_request(
            challenge.challenge,
            (context.type[:1].lower() + context.type[1:], context.value),
            subject_identifier_type=subject_identifier_type)
        signed = xades.sign(document, certificate_der, private_key)
        operation_ = self.submit_xades_signature(signed,
            verify_certificate_chain=verify_certificate_chain)
        return self._finish_authentication(operation_, context, timeout)

    def authenticate_with_token(self, context, ksef_token, *,
            timeout=None):
        "KSeF-token authentication (§4.3); returns the new `AuthTokens`."
        context = _context(context)
        operation_ = self.submit_ksef_token(context, ksef_token)
        return self._finish_authentication(operation_, context, timeout)

    def authenticate(self, credentials=None, *, timeout=None):
        "Authenticate with `credentials` (default: the client's)."
        credentials = credentials or self.credentials
        if isinstance(credentials, CertificateCredentials):
            return self.authenticate_with_certificate(
                credentials.context, credentials.certificate_der,
                credentials.private_key,
                subject_identifier_type=(
                    credentials.subject_identifier_type),
                verify_certificate_chain=(
                    credentials.verify_certificate_chain),
                timeout=timeout)
        if isinstance(credentials, TokenCredentials):
            return self.authenticate_with_token(credentials.context,
                credentials.ksef_token, timeout=timeout)
        raise AuthenticationRequired(reason='no credentials')

    def refresh_access_token(self):
        "Get a new access token with the refresh token."
        operation = 'auth_refresh'
        if not self.tokens or not self.tokens.refresh_token:
            raise AuthenticationRequired(reason='no refresh token')
        response = self._call('POST', '/auth/token/refresh',
            operation=operation, auth=self.tokens.refresh_token)
        data = self._json(response, operation)
        tokens = self.tokens

        def build():
            return AuthTokens(
                access_token=data['accessToken']['token'],
                access_valid_until=parse_datetime(
                    data['accessToken']['validUntil']),
                refresh_token=tokens.refresh_token,
                refresh_valid_until=tokens.refresh_valid_until,
                reference_number=tokens.reference_number,
                context=tokens.context)
        tokens = self._parse(operation, build)
        self._set_tokens(tokens)
        return tokens

    def revoke_session(self):
        """Revoke the current authentication (its refresh token); issued
        access tokens stay valid until they expire (§4.5)."""
        if not self.tokens:
            return
        self._call('DELETE', '/auth/sessions/current',
            operation='auth_revoke')
        self._set_tokens(None)

    def _set_tokens(self, tokens):
        self.tokens = tokens
        if self.on_tokens is not None:
            self.on_tokens(tokens)

    def _access_token(self):
        now = self.now()
        if self.tokens and self.tokens.access_usable(now, self.token_margin):
            return self.tokens.access_token
        self._renew()
        return self.tokens.access_token

    def _renew(self, force=False):
        """Refresh the access token, or authenticate again when refreshing
        is impossible or refused and credentials are available."""
        now = self.now()
        if self.tokens and self.tokens.refresh_usable(now, self.token_margin):
            try:
                self.refresh_access_token()
                return
            except (AuthenticationRequired, APIError) as exc:
                logger.info("KSeF token refresh refused (%s)", exc.code)
                if not self.credentials:
                    raise AuthenticationRequired(
                        reason='refresh refused') from None
        if not self.credentials:
            raise AuthenticationRequired(
                reason='tokens expired' if self.tokens else 'no tokens')
        self.authenticate()

    def ensure_authenticated(self):
        "Make sure a usable access token is at hand; return the tokens."
        self._access_token()
        return self.tokens

    # ------------------------------------------------------------------
    # Interactive session (§7)
    # ------------------------------------------------------------------
    def open_online_session(self, form_code=FA3, *, key=None):
        """Open an interactive session with a fresh AES key (or `key`).
        Returns an `OnlineSession` (persist it with `to_dict`, encrypted).
        """
        key = key or crypto.SymmetricKey.generate()
        operation = 'open_online_session'

        def attempt(certificate):
            body = {'formCode': form_code.to_json(),
                'encryption': self._encryption_json(certificate, key)}
            response = self._call('POST', '/sessions/online',
                operation=operation, creates=True, json_body=body)
            data = self._json(response, operation, creates=True)
            return self._parse(operation, lambda: OnlineSession(
                reference_number=data['referenceNumber'],
                valid_until=parse_datetime(data.get('validUntil')),
                key=key, form_code=form_code,
                public_key_id=certificate.public_key_id), creates=True)
        session = self._with_public_key(SYMMETRIC_KEY_ENCRYPTION, attempt)
        logger.info("KSeF online session %s opened",
            session.reference_number)
        return session

    def send_invoice(self, session, invoice_xml, *, offline_mode=False,
            hash_of_corrected_invoice=None):
        """Encrypt and send one invoice (the exact bytes given) in
        `session`.  Returns `SentInvoice`; processing is asynchronous
        (see `wait_for_invoice`).  Raises SessionClosed when the session
        takes no more invoices, OutcomeUnknown when the answer was lost
        (reconcile with `find_session_invoice(session, invoice_hash)`)."""
        if not isinstance(invoice_xml, (bytes, bytearray)):
            raise TypeError("invoice XML must be bytes")
        invoice_xml = bytes(invoice_xml)
        operation = 'send_invoice'
        reference = session.reference_number
        invoice_hash = crypto.sha256_b64(invoice_xml)
        context = {'session': reference, 'invoice_hash': invoice_hash}
        if session.valid_until and self.now() >= session.valid_until:
            raise SessionClosed(operation=operation, reason='expired',
                **context)
        encrypted = session.key.encrypt(invoice_xml)
        body = {
            'invoiceHash': invoice_hash,
            'invoiceSize': len(invoice_xml),
            'encryptedInvoiceHash': crypto.sha256_b64(encrypted),
            'encryptedInvoiceSize': len(encrypted),
            'encryptedInvoiceContent': crypto.b64(encrypted),
            'offlineMode': bool(offline_mode),
            }
        if hash_of_corrected_invoice:
            body['hashOfCorrectedInvoice'] = hash_of_corrected_invoice
        response = self._call('POST',
            '/sessions/online/%s/invoices' % _q(reference),
            operation=operation, creates=True, json_body=body,
            context=context)
        data = self._json(response, operation, creates=True,
            context=context)
        sent = self._parse(operation, lambda: SentInvoice(
            reference_number=data['referenceNumber'],
            session_reference_number=reference,
            invoice_hash=invoice_hash,
            invoice_size=body['invoiceSize'],
            encrypted_invoice_hash=body['encryptedInvoiceHash'],
            encrypted_invoice_size=body['encryptedInvoiceSize'],
            offline_mode=bool(offline_mode),
            hash_of_corrected_invoice=hash_of_corrected_invoice),
            creates=True, context=context)
        logger.info("KSeF invoice %s sent in session %s",
            sent.reference_number, reference)
        return sent

    def close_online_session(self, session):
        "Close an interactive session (starts the session UPO)."
        self._close_session(session, 'online')

    def _close_session(self, session, kind):
        operation = 'close_%s_session' % kind
        reference = _reference(session)
        context = {'session': reference}
        path = '/sessions/%s/%s/close' % (kind, _q(reference))
        try:
            self._call('POST', path, operation=operation, creates=True,
                context=context)
        except OutcomeUnknown as unknown:
            # Closing twice is refused, never harmful: reconcile from the
            # session status and close again only if it is still open.
            try:
                status = self.get_session_status(reference)
            except Exception:
                raise unknown from None
            if status.code != SessionStatus.OPEN:
                logger.info("KSeF session %s found closed (%d)",
                    reference, status.code)
                return
            self._call('POST', path, operation=operation, creates=True,
                context=context)
        logger.info("KSeF %s session %s closed", kind, reference)

    # ------------------------------------------------------------------
    # Statuses and UPO (§8)
    # ------------------------------------------------------------------
    def get_session_status(self, session):
        operation = 'session_status'
        reference = _reference(session)
        context = {'session': reference}
        response = self._call('GET', '/sessions/%s' % _q(reference),
            operation=operation, context=context)
        data = self._json(response, operation, context=context)
        return self._parse(operation,
            lambda: SessionStatus.from_json(reference, data),
            context=context)

    def wait_for_session(self, session, timeout=None):
        """Poll the session status until final (200 or a failure) or
        `timeout`; return the `SessionStatus` (check `.error()`)."""
        reference = _reference(session)
        return self._wait(lambda: self.get_session_status(reference),
            timeout=(timeout if timeout is not None
                else self.poll.session_timeout),
            operation='session', reference=reference)

    def get_invoice_status(self, session, invoice_reference):
        operation = 'invoice_status'
        reference = _reference(session)
        context = {'session': reference,
            'invoice_reference': invoice_reference}
        response = self._call('GET', '/sessions/%s/invoices/%s' % (
                _q(reference), _q(invoice_reference)),
            operation=operation, context=context)
        data = self._json(response, operation, context=context)
        return self._parse(operation, lambda: InvoiceStatus.from_json(data),
            context=context)

    def wait_for_invoice(self, session, invoice_reference, timeout=None):
        """Poll the invoice status until final or `timeout`; return the
        `InvoiceStatus` (its `.error()` gives InvoiceRejected or
        DuplicateInvoice for a refused invoice)."""
        reference = _reference(session)
        return self._wait(
            lambda: self.get_invoice_status(reference, invoice_reference),
            timeout=(timeout if timeout is not None
                else self.poll.invoice_timeout),
            operation='invoice', reference=invoice_reference)

    def list_session_invoices(self, session, *, failed=False,
            page_size=100):
        "Iterate over the `InvoiceStatus` of every (or failed) invoice."
        operation = 'session_invoices'
        reference = _reference(session)
        context = {'session': reference}
        path = '/sessions/%s/invoices%s' % (
            _q(reference), '/failed' if failed else '')
        token = None
        while True:
            headers = {'x-continuation-token': token} if token else None
            response = self._call('GET', path, operation=operation,
                context=context, headers=headers,
                params={'pageSize': page_size})
            data = self._json(response, operation, context=context)
            invoices = self._parse(operation, lambda: [
                InvoiceStatus.from_json(item)
                for item in data['invoices']], context=context)
            yield from invoices
            token = data.get('continuationToken')
            if not token:
                return

    def find_session_invoice(self, session, invoice_hash):
        """The `InvoiceStatus` of the invoice with `invoice_hash` in the
        session, or None: reconciles a send whose answer was lost."""
        for status in self.list_session_invoices(session, page_size=1000):
            if status.invoice_hash == invoice_hash:
                return status
        return None

    def _upo(self, response, operation, reference, context=None):
        content = response.content
        digest = crypto.sha256_b64(content)
        expected = response.headers.get('x-ms-meta-hash')
        if expected and expected != digest:
            raise ProtocolError(operation=operation,
                reason='UPO hash mismatch', **(context or {}))
        try:
            xmlutil.parse(content)
        except xmlutil.XMLError:
            raise ProtocolError(operation=operation,
                reason='UPO is not well-formed XML',
                **(context or {})) from None
        return Upo(content=content, sha256=digest, reference=reference)

    def get_invoice_upo(self, session, *, ksef_number=None,
            invoice_reference=None):
        "The UPO of one invoice, by KSeF number or invoice reference."
        operation = 'invoice_upo'
        reference = _reference(session)
        context = {'session': reference}
        if ksef_number:
            path = '/sessions/%s/invoices/ksef/%s/upo' % (
                _q(reference), _q(ksef_number))
        elif invoice_reference:
            path = '/sessions/%s/invoices/%s/upo' % (
                _q(reference), _q(invoice_reference))
        else:
            raise ConfigurationError(
                reason="give a KSeF number or an invoice reference")
        response = self._call('GET', path, operation=operation,
            accept='application/xml', context=context)
        return self._upo(response, operation,
            ksef_number or invoice_reference, context)

    def get_session_upo(self, session, upo_reference):
        "One page of the session UPO (after the session is processed)."
        operation = 'session_upo'
        reference = _reference(session)
        context = {'session': reference}
        response = self._call('GET', '/sessions/%s/upo/%s' % (
                _q(reference), _q(upo_reference)),
            operation=operation, accept='application/xml', context=context)
        return self._upo(response, operation, upo_reference, context)

    def get_session_upos(self, session):
        """All pages of the session UPO; `session` may be a SessionStatus
        (its pages are used) or a session/reference (status fetched)."""
        status = (session if isinstance(session, SessionStatus)
            else self.get_session_status(session))
        return [self.get_session_upo(status.reference_number,
                page.reference_number) for page in status.upo_pages]

    def download_upo(self, url, reference=None):
        """Download an UPO from a pre-signed URL (``upoDownloadUrl`` or a
        page ``downloadUrl``): plain GET, no token sent."""
        operation = 'download_upo'
        _check_presigned(url, operation)
        response = self.http.request('GET', url, operation=operation,
            headers={'Accept': 'application/xml'})
        return self._upo(response, operation, reference)

    # ------------------------------------------------------------------
    # Batch session (§9)
    # ------------------------------------------------------------------
    def open_batch_session(self, package, *, form_code=FA3,
            offline_mode=False):
        """Open a batch session for a `BatchPackage` (built with the key
        that the session will use).  Returns `BatchSession` with the
        upload URLs."""
        operation = 'open_batch_session'
        if package.closed:
            raise ConfigurationError(reason="the batch package is closed")

        def attempt(certificate):
            body = {
                'formCode': form_code.to_json(),
                'batchFile': package.batch_file_json(),
                'encryption': self._encryption_json(certificate,
                    package.key),
                'offlineMode': bool(offline_mode),
                }
            response = self._call('POST', '/sessions/batch',
                operation=operation, creates=True, json_body=body)
            data = self._json(response, operation, creates=True)

            def build():
                uploads = tuple(PartUpload(
                        ordinal_number=int(item['ordinalNumber']),
                        method=item.get('method') or 'PUT',
                        url=item['url'],
                        headers=dict(item.get('headers') or {}))
                    for item in data['partUploadRequests'])
                return BatchSession(
                    reference_number=data['referenceNumber'],
                    key=package.key, part_uploads=uploads,
                    form_code=form_code, offline_mode=bool(offline_mode),
                    public_key_id=certificate.public_key_id)
            return self._parse(operation, build, creates=True)
        session = self._with_public_key(SYMMETRIC_KEY_ENCRYPTION, attempt)
        logger.info("KSeF batch session %s opened (%d parts)",
            session.reference_number, len(session.part_uploads))
        return session

    def upload_batch_parts(self, session, package, ordinal_numbers=None):
        """Upload the encrypted parts (all, or `ordinal_numbers`) to the
        pre-signed URLs, streamed from disk; no token is sent.  A PUT of
        the same bytes is idempotent, so failed uploads are retried."""
        operation = 'upload_batch_part'
        wanted = set(ordinal_numbers or
            (p.ordinal_number for p in package.parts))
        uploads = {u.ordinal_number: u for u in session.part_uploads}
        missing = wanted - set(uploads)
        if missing:
            raise ProtocolError(operation=operation,
                reason='no upload URL for part %s' % min(missing),
                session=session.reference_number)
        for ordinal in sorted(wanted):
            upload = uploads[ordinal]
            part = package.part(ordinal)
            _check_presigned(upload.url, operation)
            headers = {k: v for k, v in upload.headers.items()
                if v is not None}
            headers['Content-Length'] = str(part.size)
            self.http.request(upload.method, upload.url,
                operation=operation, headers=headers,
                content_factory=(
                    lambda ordinal=ordinal: package.iter_part(ordinal)),
                context={'session': session.reference_number,
                    'part': ordinal})
            logger.info("KSeF batch %s part %d uploaded (%s)",
                session.reference_number, ordinal, redact_url(upload.url))

    def close_batch_session(self, session):
        "Close a batch session: KSeF starts processing the package."
        self._close_session(session, 'batch')

    def send_batch(self, package, *, form_code=FA3, offline_mode=False):
        """Open a batch session, upload every part and close it.  Returns
        the `BatchSession`; then `wait_for_session` and the statuses."""
        session = self.open_batch_session(package, form_code=form_code,
            offline_mode=offline_mode)
        self.upload_batch_parts(session, package)
        self.close_batch_session(session)
        return session

    # ------------------------------------------------------------------
    # KSeF status service (§21)
    # ------------------------------------------------------------------
    def status_service(self):
        "A `KSeFStatusClient` sharing this client's HTTP settings."
        if not self.status_url:
            raise ConfigurationError(reason="no status service URL")
        return KSeFStatusClient(self.status_url, clock=self.clock,
            sleep=self.sleep, http=self.http)

    def get_ksef_status(self):
        return self.status_service().get_status()

    def get_ksef_messages(self):
        return self.status_service().get_messages()


def _context(context):
    "A ContextIdentifier from one, a (type, value) pair or a bare NIP."
    if isinstance(context, ContextIdentifier):
        return context
    if isinstance(context, str):
        return ContextIdentifier.nip(context)
    type_, value = context
    return ContextIdentifier(type_, value)


def _reference(session):
    if isinstance(session, str):
        return session
    return session.reference_number


def _check_presigned(url, operation):
    scheme = str(url).split(':', 1)[0].lower()
    if scheme not in ('https', 'http'):
        raise ProtocolError(operation=operation,
            reason='upload/download URL is not http(s)')

