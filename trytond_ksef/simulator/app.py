# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The simulator's WSGI application: KSeF 2.0 API under ``/v2``, the
status service under ``/latarnia``, pre-signed storage URLs (batch part
upload, UPO download) under ``/storage`` and the test administration under
``/_sim``.

Every ``/v2`` request is checked against open-api.json before it is handled
(a violation is KSeF's 400 with code 21405) and every response after (a
violation is a simulator bug: it is logged, kept in
:attr:`Simulator.contract_violations` and answered with 500).
"""
import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import threading
import time
import uuid

from cryptography import x509
from cryptography.x509.oid import NameOID
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from trytond_ksef import crypto

from . import auth as auth_checks
from . import hostile, openapi, processing, upo
from .faults import FaultError, Faults
from .latarnia import Latarnia, LatarniaError
from .limits import RateLimiter, retry_after_header
from .log import ExchangeLog
from .state import (
    ACCESS_TOKEN_LIFETIME,
    AUTHENTICATION_TOKEN_LIFETIME,
    CHALLENGE_LIFETIME,
    DOWNLOAD_URL_LIFETIME,
    PART_UPLOAD_WINDOW,
    REFRESH_TOKEN_LIFETIME,
    SESSION_LIFETIME,
    AuthOperation,
    BatchPart,
    Challenge,
    Clock,
    Invoice,
    KsefToken,
    Registry,
    Session,
    Token,
    TokenSigner,
    initial_mf_keys,
    iso,
    ksef_number,
    make_mf_key,
    reference_number,
    status,
)

logger = logging.getLogger('trytond_ksef.simulator')

OWNER_PERMISSIONS = frozenset([
    'InvoiceRead', 'InvoiceWrite', 'Introspection', 'CredentialsRead',
    'CredentialsManage', 'SubunitManage'])
SESSION_READ = ('InvoiceWrite', 'Introspection', 'EnforcementOperations')
SESSION_WRITE = ('InvoiceWrite', 'EnforcementOperations')
MAX_PART_ENCRYPTED = processing.MAX_PART_PLAIN_SIZE + 16


class DropConnection(ConnectionAbortedError):
    """Raised by the application to close the connection without an answer
    (the threaded server shuts the socket; :meth:`Simulator.transport`
    turns it into httpx.RemoteProtocolError)."""


class ClientTimedOut(TimeoutError):
    "In-process only: the injected delay outlasted the client's timeout."


class ContractViolation(AssertionError):
    "The simulator answered something open-api.json does not allow."


class _KSeFError(Exception):
    "An error answer: HTTP `status`, KSeF `code` (400) or a reason."

    def __init__(self, http_status, code=None, description=None,
            details=None, reason=None, headers=None):
        super().__init__(description or str(code))
        self.http_status = http_status
        self.code = code
        self.description = description
        self.details = list(details or [])
        self.reason = reason
        self.headers = headers or {}


def _bad(code, description, details=None):
    return _KSeFError(400, code, description, details)


_client_timeout = threading.local()


# (rule, endpoint, OpenAPI template, token kind)
ROUTES = [
    ('POST', '/auth/challenge', 'challenge', None),
    ('POST', '/auth/xades-signature', 'xades_signature', None),
    ('POST', '/auth/ksef-token', 'ksef_token_auth', None),
    ('GET', '/auth/sessions', 'auth_sessions', 'access'),
    ('DELETE', '/auth/sessions/current', 'revoke_current', 'access'),
    ('DELETE', '/auth/sessions/{referenceNumber}', 'revoke_auth', 'access'),
    ('POST', '/auth/token/redeem', 'redeem', 'authentication'),
    ('POST', '/auth/token/refresh', 'refresh', 'refresh'),
    ('GET', '/auth/{referenceNumber}', 'auth_status', 'authentication'),
    ('GET', '/security/public-key-certificates', 'public_keys', None),
    ('POST', '/sessions/online', 'open_online', 'access'),
    ('POST', '/sessions/online/{referenceNumber}/invoices', 'send_invoice',
        'access'),
    ('POST', '/sessions/online/{referenceNumber}/close', 'close_online',
        'access'),
    ('POST', '/sessions/batch', 'open_batch', 'access'),
    ('POST', '/sessions/batch/{referenceNumber}/close', 'close_batch',
        'access'),
    ('GET', '/sessions', 'list_sessions', 'access'),
    ('GET', '/sessions/{referenceNumber}', 'session_status', 'access'),
    ('GET', '/sessions/{referenceNumber}/invoices', 'session_invoices',
        'access'),
    ('GET', '/sessions/{referenceNumber}/invoices/failed', 'failed_invoices',
        'access'),
    ('GET', '/sessions/{referenceNumber}/invoices/{invoiceReferenceNumber}',
        'invoice_status', 'access'),
    ('GET', '/sessions/{referenceNumber}/invoices/ksef/{ksefNumber}/upo',
        'invoice_upo_by_number', 'access'),
    ('GET',
        '/sessions/{referenceNumber}/invoices/{invoiceReferenceNumber}/upo',
        'invoice_upo', 'access'),
    ('GET', '/sessions/{referenceNumber}/upo/{upoReferenceNumber}',
        'session_upo', 'access'),
    ('GET', '/invoices/ksef/{ksefNumber}', 'get_invoice', 'access'),
    ('POST', '/tokens', 'create_token', 'access'),
    ('GET', '/tokens', 'list_tokens', 'access'),
    ('GET', '/tokens/{referenceNumber}', 'token_status', 'access'),
    ('DELETE', '/tokens/{referenceNumber}', 'revoke_token', 'access'),
    ('POST', '/testdata/person', 'td_person', None),
    ('POST', '/testdata/person/remove', 'td_person_remove', None),
    ('POST', '/testdata/subject', 'td_subject', None),
    ('POST', '/testdata/subject/remove', 'td_subject_remove', None),
    ('POST', '/testdata/permissions', 'td_permissions', None),
    ('POST', '/testdata/permissions/revoke', 'td_permissions_revoke', None),
    ('POST', '/testdata/attachment', 'td_attachment', None),
    ('POST', '/testdata/attachment/revoke', 'td_attachment_revoke', None),
    ('POST', '/testdata/context/block', 'td_block', None),
    ('POST', '/testdata/context/unblock', 'td_unblock', None),
    ]

ADMIN_ROUTES = [
    ('GET', '/_sim/health', 'admin_health'),
    ('GET', '/_sim/log', 'admin_log'),
    ('GET', '/_sim/faults', 'admin_faults'),
    ('POST', '/_sim/faults', 'admin_add_fault'),
    ('DELETE', '/_sim/faults', 'admin_clear_faults'),
    ('DELETE', '/_sim/faults/<int:fault_id>', 'admin_remove_fault'),
    ('GET', '/_sim/clock', 'admin_clock'),
    ('POST', '/_sim/clock', 'admin_set_clock'),
    ('POST', '/_sim/keys/rotate', 'admin_rotate_key'),
    ('POST', '/_sim/ksef-tokens', 'admin_ksef_token'),
    ('POST', '/_sim/tokens/expire', 'admin_expire_tokens'),
    ('POST', '/_sim/sessions/<ref>/close', 'admin_close_session'),
    ('GET', '/_sim/latarnia', 'admin_latarnia'),
    ('POST', '/_sim/latarnia', 'admin_announce'),
    ('POST', '/_sim/latarnia/<int:event_id>/end', 'admin_end_event'),
    ('DELETE', '/_sim/latarnia', 'admin_clear_latarnia'),
    ('GET', '/_sim/contract-violations', 'admin_violations'),
    ('GET', '/_sim/auth', 'admin_auth_operations'),
    ('GET', '/_sim/auth/<ref>/document', 'admin_auth_document'),
    ]


def _werkzeug_rule(template):
    return template.replace('{', '<').replace('}', '>')


def _json(value, http_status=200, headers=None,
        mimetype='application/json'):
    return Response(json.dumps(value, ensure_ascii=False), http_status,
        headers=headers, mimetype=mimetype)


class Simulator:
    """A strict KSeF 2.0 stand-in; the instance is the WSGI application.

    Parameters (all optional):

    `now`
        callable returning the current datetime (overrides the clock);
    `clock`
        a :class:`Clock` to share;
    `time_scale`
        factor applied to rate-limit windows (0.001: an hour is 3.6 s);
    `rate_limits`
        False disables rate limiting;
    `processing_delay`
        real seconds during which an authentication, an invoice or a
        closed session stays "in progress" (so clients must poll);
    `log_path`
        file receiving the exchange log as JSON lines (appended);
    `access_token_lifetime`
        timedelta, default 15 min.
    """

    def __init__(self, now=None, clock=None, time_scale=1.0,
            rate_limits=True, processing_delay=0.2, log_path=None,
            access_token_lifetime=ACCESS_TOKEN_LIFETIME):
        self.clock = clock or Clock(now)
        self.faults = Faults()
        self.limiter = RateLimiter(time_scale=time_scale,
            enabled=rate_limits)
        self.latarnia = Latarnia(self.clock)
        self.log = ExchangeLog(log_path)
        self.processing_delay = processing_delay
        self.access_token_lifetime = access_token_lifetime
        self.contract_violations = []
        self.registry = Registry()
        self.keys = initial_mf_keys(self.clock.now())
        self._signer = TokenSigner()
        self._url_secret = os.urandom(16)
        self._lock = threading.RLock()
        self.challenges = {}
        self.auth_operations = {}
        self.tokens = {}
        self.ksef_tokens = {}
        self.sessions = {}
        self.persons = {}           # pesel -> nip
        self.subjects = {}          # nip -> description
        self.grants = {}            # (context nip, (type, value)) -> set
        self.attachments = set()    # NIPs allowed to send attachments
        self.blocked = set()        # blocked contexts (type, value)
        self._routes = {}
        rules = []
        for method, template, endpoint, kind in ROUTES:
            rules.append(Rule('/v2' + _werkzeug_rule(template),
                    methods=[method], endpoint=endpoint))
            self._routes[endpoint] = (template, kind)
        for method, path, endpoint in ADMIN_ROUTES:
            rules.append(Rule(path, methods=[method], endpoint=endpoint))
        rules += [
            Rule('/latarnia/status', methods=['GET'],
                endpoint='latarnia_status'),
            Rule('/latarnia/messages', methods=['GET'],
                endpoint='latarnia_messages'),
            Rule('/storage/batch/<ref>/<int:ordinal>', methods=['PUT'],
                endpoint='upload_part'),
            Rule('/storage/upo/<ref>/<key>', methods=['GET'],
                endpoint='download_upo'),
            ]
        self.url_map = Map(rules, strict_slashes=False)
        openapi.warm_up()

    # --- public helpers for tests

    def transport(self):
        "An httpx transport calling this simulator in-process."
        from .transport import SimulatorTransport
        return SimulatorTransport(self)

    def now(self):
        return self.clock.now()

    def public_key(self, usage):
        "The current MFKey of `usage` (latest validFrom, not withdrawn)."
        keys = [k for k in self.keys if k.usage == usage and not k.withdrawn]
        return max(keys, key=lambda k: k.valid_from)

    def rotate_key(self, usage='SymmetricKeyEncryption', keep_old=False):
        """Replace the MF key of `usage` by a new one.  Unless `keep_old`
        (planned rotation, both listed), the old key is withdrawn at once
        (emergency): its publicKeyId is then refused with 21470."""
        with self._lock:
            old = self.public_key(usage)
            new = make_mf_key(usage, self.clock.now())
            new.valid_from = max(new.valid_from,
                old.valid_from + dt.timedelta(seconds=1))
            if not keep_old:
                old.withdrawn = True
            self.keys.append(new)
            return new

    def create_ksef_token(self, context_value, context_type='Nip',
            permissions=('InvoiceWrite', 'InvoiceRead'),
            description="Token utworzony w symulatorze"):
        """Test-only: an Active KSeF token for the context, owned by the
        context itself.  Returns (referenceNumber, token secret)."""
        with self._lock:
            token = self._new_ksef_token((context_type, context_value),
                ('Nip', context_value.split('-', 1)[0]), list(permissions),
                description, active=True)
            return token.reference, token.secret

    def expire_access_tokens(self):
        "Make every access token issued so far expired (401 from now on)."
        with self._lock:
            past = self.clock.now() - dt.timedelta(seconds=1)
            for token in self.tokens.values():
                if token.kind == 'access':
                    token.expires = min(token.expires, past)

    def close_session(self, reference):
        """KSeF closes a session on its own (12 h limit, maintenance): no
        more invoices are accepted; the session is then processed."""
        with self._lock:
            session = self.sessions.get(reference)
            if session is None:
                raise KeyError(reference)
            if session.is_open:
                self._close(session, by_ksef=True)

    def check(self):
        "Raise ContractViolation if any response broke the contract."
        if self.contract_violations:
            raise ContractViolation('; '.join(
                '%s %s -> %s: %s' % v for v in self.contract_violations))

    def new_ksef_number(self, nip, on_date):
        return ksef_number(nip, on_date)

    def check_upo(self, document):
        problems = upo.errors(document)
        if problems:
            self._violation('UPO', '-', 0, [m for _, _, m in problems])

    # --- WSGI

    def __call__(self, environ, start_response):
        return self.wsgi_app(environ, start_response)

    def wsgi_app(self, environ, start_response):
        request = Request(environ)
        started = time.monotonic()
        entry = self.log.start(request.method, request.path,
            request.remote_addr, self.clock.now())
        try:
            response = self._dispatch(request, entry)
            if (200 <= response.status_code < 300
                    and not request.path.startswith('/_sim/')):
                fault = self.faults.take('hostile_xml', request.method,
                    request.path)
                if fault is not None:
                    entry['fault'] = 'hostile_xml'
                    response = hostile.response(fault, response)
        except DropConnection:
            entry['status'] = None
            entry['dropped'] = True
            self.log.finish(entry, started)
            raise
        except ClientTimedOut:
            entry['status'] = None
            entry['clientTimedOut'] = True
            self.log.finish(entry, started)
            raise
        except Exception as exc:
            # A simulator bug must not pass unnoticed: a 500, a recorded
            # violation (Simulator.check() raises) and a traceback.
            logger.exception("simulator error on %s %s", request.method,
                request.path)
            entry['error'] = type(exc).__name__
            self._violation(request.method, request.path, 500,
                ["simulator error: %s" % type(exc).__name__])
            response = self._problem(500, "Internal Server Error",
                "Simulator error: %s" % type(exc).__name__, request.path)
        entry['status'] = response.status_code
        self.log.finish(entry, started)
        return response(environ, start_response)

    def _dispatch(self, request, entry):
        path = request.path
        admin = path.startswith('/_sim/')
        if not admin:
            fault = self.faults.take('outage', request.method, path)
            if fault is not None:
                entry['fault'] = 'outage'
                if fault.mode == 'drop':
                    raise DropConnection("outage")
                return self._problem(fault.status, "Service Unavailable",
                    "KSeF jest niedostępny (symulowana awaria).", path)
            fault = self.faults.take('delay', request.method, path)
            if fault is not None:
                entry['fault'] = 'delay'
                self._delay(fault)
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except NotFound:
            template = openapi.find_operation(request.method, path)
            if template is not None and not admin:
                # A KSeF operation the simulator does not serve: say so
                # rather than pretend the path does not exist.
                entry['validation'] = 'not-simulated'
                entry['operation'] = '%s %s' % (request.method, template)
                logger.warning("not simulated: %s %s", request.method,
                    template)
                return self._problem(501, "Not Implemented",
                    "Operacja %s %s API KSeF nie jest obsługiwana przez "
                    "symulator." % (request.method, template), path)
            return self._problem(404, "Not Found",
                "Nie znaleziono zasobu.", path)
        except MethodNotAllowed:
            return self._problem(405, "Method Not Allowed",
                "Metoda niedozwolona.", path)
        if endpoint in self._routes:
            return self._api(request, endpoint, args, entry)
        entry['validation'] = 'skipped'
        try:
            with self._lock:
                return getattr(self, '_' + endpoint)(request, **args)
        except (FaultError, LatarniaError, ValueError, TypeError,
                KeyError) as exc:
            if not admin:
                raise
            return _json({'error': str(exc),
                    'code': getattr(exc, 'code', 'simulator_bad_request')},
                400)

    def _delay(self, fault):
        timeout = getattr(_client_timeout, 'value', None)
        if timeout is not None and fault.delay >= timeout:
            # In-process: the real client would have given up by now.
            time.sleep(timeout)
            if fault.mode == 'drop':
                raise ClientTimedOut()
            _client_timeout.expired = True
            return
        time.sleep(fault.delay)
        if fault.mode == 'drop':
            raise DropConnection("delay then drop")

    # --- the API pipeline

    def _api(self, request, endpoint, args, entry):
        template, token_kind = self._routes[endpoint]
        entry['operation'] = '%s %s' % (request.method, template)
        entry['references'] = {k: v for k, v in args.items()
            if k != 'ksefNumber'}
        if 'ksefNumber' in args:
            entry['references']['ksefNumber'] = args['ksefNumber']
        problem_format = (request.headers.get('X-Error-Format', '').lower()
            == 'problem-details')
        fault_hit = None
        try:
            fault = self.faults.take('session_closed', request.method,
                request.path)
            if fault is not None and 'referenceNumber' in args:
                entry['fault'] = 'session_closed'
                with self._lock:
                    session = self.sessions.get(args['referenceNumber'])
                    if session is not None and session.is_open:
                        self._close(session, by_ksef=True)
            ctx = None
            if token_kind:
                if self.faults.take('expired_token', request.method,
                        request.path) is not None and \
                        request.headers.get('Authorization'):
                    entry['fault'] = 'expired_token'
                    raise _KSeFError(401, description=(
                            "Token wygasł (symulowana awaria)."))
                with self._lock:
                    ctx = self._authorize(request, token_kind)
            # Counted per group of operations, per (context, client IP);
            # the public endpoints (no group) per operation and IP.
            group = openapi.rate_limit_group(request.method, template)
            key = (group or (request.method, template),
                ctx['operation'].context if ctx else None,
                request.remote_addr)
            wait = self.limiter.hit(key,
                openapi.rate_limits(request.method, template))
            if wait is not None:
                raise _KSeFError(429, 429, "Too Many Requests", [
                        "Przekroczono limit liczby żądań dla %s %s."
                        % (request.method, template)],
                    headers={'Retry-After': retry_after_header(wait)})
            problems, _ = openapi.validate_request(request)
            if problems:
                entry['validation'] = 'request-invalid'
                entry['validationErrors'] = problems
                raise _bad(21405, "Błąd walidacji danych wejściowych.",
                    problems)
            with self._lock:
                response = getattr(self, '_' + endpoint)(
                    request, ctx, **args)
            if getattr(_client_timeout, 'expired', False):
                _client_timeout.expired = False
                raise ClientTimedOut()
            fault_hit = self.faults.take('drop_after_accept',
                request.method, request.path)
        except _KSeFError as error:
            response = self._error_response(error, request, problem_format)
            if error.code:
                entry['errorCode'] = error.code
        self._collect_references(entry, response)
        response_problems = openapi.validate_response(request, response)
        if response_problems:
            entry['validation'] = 'response-invalid'
            entry['validationErrors'] = response_problems
            self._violation(request.method, request.path,
                response.status_code, response_problems)
            response = self._problem(500, "Internal Server Error",
                "Simulator contract violation: %s"
                % '; '.join(response_problems), request.path)
        elif 'validation' not in entry:
            entry['validation'] = 'ok'
        if request.headers.get('X-Test-System-Warning'):
            response.headers['X-System-Warning'] = (
                "Test warning of the KSeF simulator")
        if fault_hit is not None:
            entry['fault'] = 'drop_after_accept'
            entry['handledStatus'] = response.status_code
            if fault_hit.mode == 'drop':
                raise DropConnection("answer lost")
            return self._problem(fault_hit.status, "Bad Gateway",
                "Odpowiedź utracona (symulowana awaria).", request.path)
        return response

    def _collect_references(self, entry, response):
        "Reference and KSeF numbers of a JSON answer (nothing else)."
        if response.mimetype != 'application/json':
            return
        try:
            body = json.loads(response.get_data())
        except ValueError:
            return
        refs = entry.setdefault('references', {})
        if isinstance(body, dict):
            for key in ('referenceNumber', 'ksefNumber'):
                if isinstance(body.get(key), str):
                    refs['response.' + key] = body[key]
            status_ = body.get('status')
            if isinstance(status_, dict) and 'code' in status_:
                entry['statusCode'] = status_['code']

    def _violation(self, method, path, http_status, problems):
        self.contract_violations.append(
            (method, path, http_status, '; '.join(problems)))
        logger.error("contract violation: %s %s -> %s: %s", method, path,
            http_status, '; '.join(problems))

    def _trace_id(self):
        return uuid.uuid4().hex

    def _problem(self, http_status, title, detail, instance, **extra):
        body = {
            'title': title,
            'status': http_status,
            'detail': detail,
            'instance': instance,
            'timestamp': iso(self.clock.now()),
            'traceId': self._trace_id(),
            }
        body.update(extra)
        return _json(body, http_status, mimetype='application/problem+json')

    def _error_response(self, error, request, problem_format):
        path = request.path
        if error.http_status == 400:
            if problem_format:
                return _json({
                        'title': "Bad Request",
                        'status': 400,
                        'instance': path,
                        'detail': error.description,
                        'errors': [{
                                'code': error.code,
                                'description': error.description,
                                'details': error.details}],
                        'timestamp': iso(self.clock.now()),
                        'traceId': self._trace_id(),
                        }, 400, mimetype='application/problem+json')
            return _json({'exception': {
                        'exceptionDetailList': [{
                                'exceptionCode': error.code,
                                'exceptionDescription': error.description,
                                'details': error.details}],
                        'serviceCode': self._trace_id(),
                        'serviceCtx': 'srvKSeFSIM',
                        'serviceName': 'KSeF simulator',
                        'timestamp': iso(self.clock.now()),
                        }}, 400)
        if error.http_status == 429:
            if problem_format:
                response = self._problem(429, "Too Many Requests",
                    '; '.join(error.details), path)
            else:
                response = _json({'status': {
                            'code': 429,
                            'description': "Too Many Requests",
                            'details': error.details}}, 429)
            response.headers.update(error.headers)
            return response
        if error.http_status == 401:
            return self._problem(401, "Unauthorized",
                error.description or "Brak autoryzacji.", path)
        if error.http_status == 403:
            return self._problem(403, "Forbidden",
                error.description or "Brak uprawnień.", path,
                reasonCode=error.reason or 'missing-permissions')
        return self._problem(error.http_status, "Error",
            error.description or "", path)

    def _authorize(self, request, kind):
        # The scheme is case-insensitive (RFC 7235; ASP.NET's JwtBearer,
        # which KSeF runs on, compares it so).
        scheme, _, credentials = request.headers.get(
            'Authorization', '').strip().partition(' ')
        if scheme.lower() != 'bearer' or not credentials.strip():
            raise _KSeFError(401, description="Brak tokenu dostępowego.")
        claims = self._signer.check(credentials.strip())
        if not claims or claims.get('typ') != kind:
            raise _KSeFError(401, description="Nieprawidłowy token.")
        token = self.tokens.get(claims.get('jti'))
        if token is None or token.revoked:
            raise _KSeFError(401, description="Token unieważniony.")
        if token.expires <= self.clock.now():
            raise _KSeFError(401, description="Token wygasł.")
        operation = self.auth_operations[token.auth_reference]
        if kind == 'access' and operation.allowed_ips is not None:
            if not _ip_allowed(request.remote_addr, operation.allowed_ips):
                raise _KSeFError(403, description=(
                        "Adres IP nie jest dozwolony."),
                    reason='ip-not-allowed')
        return {'token': token, 'operation': operation}

    def _require(self, ctx, permissions):
        if not set(permissions) & set(ctx['operation'].permissions):
            raise _KSeFError(403, description=(
                    "Brak wymaganych uprawnień: %s." % ', '.join(permissions)),
                reason='missing-permissions')

    # --- tokens and authentication

    def _issue(self, kind, operation, lifetime):
        now = self.clock.now()
        jti = uuid.uuid4().hex
        expires = now + lifetime
        self.tokens[jti] = Token(jti, kind, operation.reference, expires)
        context_type, context_value = operation.context
        token = self._signer.issue({
                'typ': kind,
                'jti': jti,
                'ref': operation.reference,
                'ctx': '%s:%s' % (context_type, context_value),
                'iat': int(now.timestamp()),
                'exp': int(expires.timestamp()),
                'iss': 'ksef-simulator',
                })
        return {'token': token, 'validUntil': iso(expires)}

    def _permissions(self, context, subject):
        context_type, value = context
        nip = value.split('-', 1)[0]
        permissions = set()
        owner = (subject == ('Nip', nip)
            or (subject[0] == 'Pesel'
                and self.persons.get(subject[1]) == nip))
        if owner and context_type in ('Nip', 'InternalId', 'NipVatUe'):
            permissions |= OWNER_PERMISSIONS
        permissions |= self.grants.get((nip, subject), set())
        return frozenset(permissions)

    def _use_challenge(self, value):
        challenge = self.challenges.get(value)
        now = self.clock.now()
        if challenge is None or challenge.used \
                or now - challenge.timestamp > CHALLENGE_LIFETIME:
            raise _bad(21111, "Nieprawidłowe wyzwanie autoryzacyjne.")
        challenge.used = True
        return challenge

    def _new_operation(self, **kwargs):
        now = self.clock.now()
        operation = AuthOperation(
            reference=reference_number('AU', now), start=now,
            ready_at=time.monotonic() + self.processing_delay, **kwargs)
        self.auth_operations[operation.reference] = operation
        return operation

    def _init_response(self, operation):
        return _json({
                'referenceNumber': operation.reference,
                'authenticationToken': self._issue('authentication',
                    operation, AUTHENTICATION_TOKEN_LIFETIME),
                }, 202)

    def _challenge(self, request, ctx):
        now = self.clock.now()
        challenge = Challenge(reference_number('CR', now), now,
            request.remote_addr or '127.0.0.1')
        self.challenges[challenge.value] = challenge
        return _json({
                'challenge': challenge.value,
                'timestamp': iso(challenge.timestamp),
                'timestampMs': challenge.timestamp_ms,
                'clientIp': challenge.client_ip,
                })

    def _xades_signature(self, request, ctx):
        data = request.get_data()
        now = self.clock.now()
        try:
            verified = auth_checks.verify_request(data, now)
        except auth_checks.AuthRefused as exc:
            raise _bad(exc.ksef_code, exc.description, exc.details) \
                from None
        if not verified.challenge or not verified.context \
                or not verified.context[0]:
            raise _bad(21401, "Dokument nie jest zgodny ze schemą (xsd).")
        self._use_challenge(verified.challenge)
        try:
            certificate = auth_checks.load_certificate(
                verified.certificate_der)
        except auth_checks.AuthRefused as exc:
            raise _bad(exc.ksef_code, exc.description, exc.details) \
                from None
        if certificate.purpose != 'authentication':
            # An Offline KSeF certificate "does not allow authentication"
            # (§5).  KSeF's answer is not documented: the synchronous
            # "invalid certificate" is the safer reading.
            raise _bad(21115, "Nieprawidłowy certyfikat.", [
                    "Certyfikat nie jest certyfikatem uwierzytelniającym "
                    "(typ Offline lub niewłaściwe użycie klucza)."])
        identifier = certificate.identifier
        if verified.subject_identifier_type == 'certificateFingerprint':
            subject = ('Fingerprint', certificate.fingerprint)
        elif identifier.type in ('Nip', 'Pesel'):
            subject = (identifier.type, identifier.value)
        else:
            raise _bad(21117, auth_checks.DESCRIPTIONS[21117], [
                    "Certyfikat nie zawiera identyfikatora NIP ani PESEL."])
        context = tuple(verified.context)
        if context[0] == 'PeppolId':
            raise _bad(21117, auth_checks.DESCRIPTIONS[21117], [
                    "Kontekst PeppolId wymaga certyfikatu dostawcy usług "
                    "Peppol."])
        seal = bool(x509.load_der_x509_certificate(
                certificate.der).subject.get_attributes_for_oid(
                NameOID.ORGANIZATION_IDENTIFIER))
        if seal:
            method, code, name = ('QualifiedSeal', 'xades.qualified-seal',
                "Pieczęć kwalifikowana")
        else:
            method, code, name = ('QualifiedSignature',
                'xades.qualified-signature', "Podpis kwalifikowany")
        permissions = self._permissions(context, subject)
        if not (certificate.not_before <= now <= certificate.not_after):
            final = status(460, "Uwierzytelnianie zakończone niepowodzeniem "
                "z powodu błędu certyfikatu", ["Nieważny certyfikat"])
        elif (request.args.get('verifyCertificateChain') or '').lower() \
                == 'true':
            final = status(460, "Uwierzytelnianie zakończone niepowodzeniem "
                "z powodu błędu certyfikatu",
                ["Niezaufany łańcuch certyfikatów"])
        elif context in self.blocked:
            final = status(480, "Uwierzytelnienie zablokowane", [
                    "Podejrzenie incydentu bezpieczeństwa. Skontaktuj się z "
                    "Ministerstwem Finansów przez formularz zgłoszeniowy."])
        elif not permissions:
            final = status(415, "Uwierzytelnianie zakończone niepowodzeniem",
                ["Brak przypisanych uprawnień"])
        else:
            final = status(200, "Uwierzytelnianie zakończone sukcesem")
        operation = self._new_operation(
            category='XadesSignature', method=method, method_code=code,
            display_name=name, context=context, subject=subject,
            final_status=final, document_hash=crypto.sha256_b64(data),
            document=data,
            permissions=permissions,
            allowed_ips=verified.allowed_ips)
        return self._init_response(operation)

    def _ksef_token_auth(self, request, ctx):
        body = request.get_json()
        self._use_challenge(body['challenge'])
        challenge = self.challenges[body['challenge']]
        key = self._key_for('KsefTokenEncryption', body.get('publicKeyId'))
        context = (body['contextIdentifier']['type'],
            body['contextIdentifier']['value'])
        failure = None
        token = None
        try:
            plain = crypto.rsa_oaep_decrypt(key.private_key,
                crypto.b64decode(body['encryptedToken'])).decode('utf-8')
            secret, _, timestamp = plain.rpartition('|')
        except (ValueError, UnicodeDecodeError):
            secret, timestamp = None, None
            failure = "Nieprawidłowy token"
        if failure is None:
            token = next((t for t in self.ksef_tokens.values()
                    if hmac.compare_digest(t.secret.encode('utf-8'),
                        secret.encode('utf-8'))), None)
            if timestamp != str(challenge.timestamp_ms):
                failure = "Nieprawidłowy czas tokena"
            elif token is None or token.context != context:
                failure = "Nieprawidłowy token"
            elif token.revoked:
                failure = "Token unieważniony"
            elif token.status != 'Active':
                failure = "Token nieaktywny"
        if failure is not None:
            final = status(450, "Uwierzytelnianie zakończone niepowodzeniem "
                "z powodu błędnego tokenu", [failure])
            permissions = frozenset()
        elif context in self.blocked:
            final = status(480, "Uwierzytelnienie zablokowane", [
                    "Podejrzenie incydentu bezpieczeństwa. Skontaktuj się z "
                    "Ministerstwem Finansów przez formularz zgłoszeniowy."])
            permissions = frozenset()
        else:
            final = status(200, "Uwierzytelnianie zakończone sukcesem")
            permissions = frozenset(token.permissions)
            token.last_use = self.clock.now()
        policy = (body.get('authorizationPolicy') or {}).get('allowedIps')
        operation = self._new_operation(
            category='Token', method='Token', method_code='token.ksef',
            display_name="Token KSeF", context=context,
            subject=token.author if token else ('Nip', context[1][:10]),
            final_status=final, permissions=permissions,
            ksef_token_reference=token.reference if token and not failure
            else None,
            allowed_ips=_allowed_ips_from_json(policy))
        return self._init_response(operation)

    def _auth_json(self, operation, current=None):
        value = {
            'startDate': iso(operation.start),
            'authenticationMethod': operation.method,
            'authenticationMethodInfo': {
                'category': operation.category,
                'code': operation.method_code,
                'displayName': operation.display_name,
                },
            'status': operation.status(),
            'isTokenRedeemed': operation.redeemed,
            'lastTokenRefreshDate': iso(operation.last_refresh),
            'refreshTokenValidUntil': iso(operation.refresh_valid_until),
            }
        if current is not None:
            value['referenceNumber'] = operation.reference
            value['isCurrent'] = current
        return value

    def _auth_status(self, request, ctx, referenceNumber):
        operation = self.auth_operations.get(referenceNumber)
        if operation is None:
            raise _bad(21304, "Brak uwierzytelnienia.", [
                    "Operacja uwierzytelniania o numerze referencyjnym %s "
                    "nie została znaleziona." % referenceNumber])
        if operation is not ctx['operation']:
            raise _KSeFError(403, description=(
                    "Token nie dotyczy tej operacji uwierzytelniania."),
                reason='insufficient-resource-access')
        return _json(self._auth_json(operation))

    def _redeem(self, request, ctx):
        operation = ctx['operation']
        code = operation.status()['code']
        if operation.redeemed:
            raise _bad(21301, "Brak autoryzacji.", [
                    "Tokeny dla operacji uwierzytelniania %s zostały już "
                    "pobrane." % operation.reference])
        if code != 200:
            raise _bad(21301, "Brak autoryzacji.", [
                    "Status uwierzytelniania (%s) nie pozwala na pobranie "
                    "tokenów." % code])
        operation.redeemed = True
        operation.refresh_valid_until = (self.clock.now()
            + REFRESH_TOKEN_LIFETIME)
        return _json({
                'accessToken': self._issue('access', operation,
                    self.access_token_lifetime),
                'refreshToken': self._issue('refresh', operation,
                    REFRESH_TOKEN_LIFETIME),
                })

    def _refresh(self, request, ctx):
        operation = ctx['operation']
        if operation.revoked or operation.status()['code'] != 200:
            raise _bad(21301, "Brak autoryzacji.", [
                    "Status uwierzytelniania (%s) nie pozwala na odświeżenie "
                    "tokenu dostępowego." % operation.status()['code']])
        if operation.ksef_token_reference:
            token = self.ksef_tokens.get(operation.ksef_token_reference)
            if token is None or token.revoked:
                raise _bad(21301, "Brak autoryzacji.",
                    ["Token KSeF został unieważniony."])
        operation.last_refresh = self.clock.now()
        return _json({'accessToken': self._issue('access', operation,
                    self.access_token_lifetime)})

    def _revoke_operation(self, operation):
        operation.revoked = True
        for token in self.tokens.values():
            if token.auth_reference == operation.reference \
                    and token.kind == 'refresh':
                token.revoked = True

    def _revoke_current(self, request, ctx):
        self._revoke_operation(ctx['operation'])
        return Response(status=204)

    def _revoke_auth(self, request, ctx, referenceNumber):
        operation = self.auth_operations.get(referenceNumber)
        if operation is None \
                or operation.context != ctx['operation'].context:
            raise _bad(21304, "Brak uwierzytelnienia.", [
                    "Operacja uwierzytelniania o numerze referencyjnym %s "
                    "nie została znaleziona." % referenceNumber])
        self._revoke_operation(operation)
        return Response(status=204)

    def _auth_sessions(self, request, ctx):
        current = ctx['operation']
        items = [o for o in self.auth_operations.values()
            if o.context == current.context and o.redeemed
            and not o.revoked]
        page, token = self._page(request, items, 100)
        return _json({
                'continuationToken': token,
                'items': [self._auth_json(o, o is current) for o in page],
                })

    def _key_for(self, usage, key_id):
        if key_id:
            for key in self.keys:
                if key.public_key_id == key_id and key.usage == usage \
                        and not key.withdrawn:
                    return key
            raise _bad(21470, "Przesłany identyfikator klucza jest nieznany "
                "lub wskazuje na wycofany klucz.", [
                    "Klucz o identyfikatorze %s nie jest wspierany."
                    % key_id])
        return self.public_key(usage)

    def _public_keys(self, request, ctx):
        return _json([k.as_json() for k in self.keys if not k.withdrawn])

    # --- sessions

    def _form_code(self, form):
        key = (form['systemCode'], form['schemaVersion'], form['value'])
        if key not in processing.FORMS:
            raise _bad(21405, "Błąd walidacji danych wejściowych.", [
                    "formCode: schemat %s %s %s nie jest obsługiwany "
                    "(symulator obsługuje FA (3) 1-0E FA)." % key])
        return dict(form)

    def _open_key(self, session, encryption):
        key = self._key_for('SymmetricKeyEncryption',
            encryption.get('publicKeyId'))
        try:
            symmetric = crypto.rsa_oaep_decrypt(key.private_key,
                crypto.b64decode(encryption['encryptedSymmetricKey']))
            iv = crypto.b64decode(encryption['initializationVector'])
            if len(symmetric) != 32 or len(iv) != 16:
                raise ValueError
            session.key = crypto.SymmetricKey(symmetric, iv)
        except ValueError:
            session.key_error = True

    def _new_session(self, kind, ctx, form, infix):
        now = self.clock.now()
        session = Session(reference=reference_number(infix, now), kind=kind,
            auth=ctx['operation'], form_code=form, created=now, updated=now,
            valid_until=now + SESSION_LIFETIME)
        return session

    def _open_online(self, request, ctx):
        self._require(ctx, SESSION_WRITE)
        body = request.get_json()
        form = self._form_code(body['formCode'])
        session = self._new_session('Online', ctx, form, 'SO')
        self._open_key(session, body['encryption'])
        self.sessions[session.reference] = session
        return _json({'referenceNumber': session.reference,
                'validUntil': iso(session.valid_until)}, 201)

    def _session(self, ctx, reference, kind=None):
        session = self.sessions.get(reference)
        if session is None or (kind and session.kind != kind) \
                or session.auth.context != ctx['operation'].context:
            raise _bad(21173, "Brak sesji o wskazanym numerze "
                "referencyjnym.", ["Sesja o numerze referencyjnym %s nie "
                    "została znaleziona." % reference])
        if session.is_open and self.clock.now() >= session.valid_until:
            self._close(session, by_ksef=True)
        return session

    def _send_invoice(self, request, ctx, referenceNumber):
        self._require(ctx, SESSION_WRITE)
        session = self._session(ctx, referenceNumber, 'Online')
        if not session.is_open:
            code = session.visible_status()['code']
            raise _bad(21180, "Status sesji nie pozwala na wykonanie "
                "operacji.", ["Status sesji %s uniemożliwia wysyłkę "
                    "faktur." % code])
        if len(session.invoices) >= processing.MAX_INVOICES:
            raise _bad(21155, "Przekroczono dozwoloną liczbę faktur w "
                "sesji.", ["Sesja o numerze referencyjnym %s osiągnęła "
                    "dozwolony limit liczby faktur %d."
                    % (referenceNumber, processing.MAX_INVOICES)])
        body = request.get_json()
        content = crypto.b64decode(body['encryptedInvoiceContent'])
        if len(content) != body['encryptedInvoiceSize']:
            raise _bad(21402, "Nieprawidłowy rozmiar pliku.",
                ["Długość treści nie zgadza się z rozmiarem pliku."])
        if crypto.sha256_b64(content) != body['encryptedInvoiceHash']:
            raise _bad(21403, "Nieprawidłowy skrót pliku.",
                ["Skrót treści nie zgadza się ze skrótem pliku."])
        corrected = body.get('hashOfCorrectedInvoice')
        if corrected:
            refusal = processing.correction_refusal(self, corrected)
            if refusal is not None:
                code, detail = refusal
                raise _bad(code, {
                        21166: "Korekta techniczna niedostępna.",
                        21167: "Status faktury nie pozwala na korektę "
                            "techniczną."}[code], [detail])
        now = self.clock.now()
        invoice = Invoice(
            reference=reference_number('EE', now),
            ordinal=len(session.invoices) + 1, session=session,
            invoice_hash=body['invoiceHash'],
            invoice_size=body['invoiceSize'], invoicing_date=now,
            offline_declared=bool(body.get('offlineMode')),
            corrected_hash=corrected,
            ready_at=time.monotonic() + self.processing_delay)
        session.invoices.append(invoice)
        session.updated = now
        try:
            plain = session.key.decrypt(content)
        except ValueError:
            invoice.status = status(435, processing.S_DECRYPT)
        else:
            refused = self.faults.take('reject_invoice', request.method,
                request.path)
            if refused is not None:
                processing.refuse(invoice, refused.status)
            else:
                processing.process_invoice(self, invoice, plain,
                    declared=(body['invoiceSize'], body['invoiceHash']))
        self.registry.add_processed(invoice)
        return _json({'referenceNumber': invoice.reference}, 202)

    def _close(self, session, by_ksef=False):
        now = self.clock.now()
        session.closed = now
        session.updated = now
        delays = [i.ready_at for i in session.invoices]
        session.ready_at = max(delays + [time.monotonic()
                + self.processing_delay])
        if session.kind == 'Batch':
            if by_ksef:
                session.final_status = status(440, "Sesja anulowana",
                    ["Przekroczono czas wysyłki"])
            else:
                processing.process_batch(self, session)
        else:
            processing.finish(self, session)

    def _close_online(self, request, ctx, referenceNumber):
        self._require(ctx, SESSION_WRITE)
        session = self._session(ctx, referenceNumber, 'Online')
        if not session.is_open:
            code = session.visible_status()['code']
            raise _bad(21180, "Status sesji nie pozwala na wykonanie "
                "operacji.", ["Status sesji %s uniemożliwia jej zamknięcie."
                    % code])
        self._close(session)
        return Response(status=204)

    def _open_batch(self, request, ctx):
        self._require(ctx, SESSION_WRITE)
        body = request.get_json()
        form = self._form_code(body['formCode'])
        batch = body['batchFile']
        parts = batch['fileParts']
        ordinals = sorted(p['ordinalNumber'] for p in parts)
        if ordinals != list(range(1, len(parts) + 1)):
            raise _bad(21157, "Nieprawidłowy rozmiar części pakietu.",
                ["Numery części muszą być kolejne od 1."])
        for part in parts:
            if part['fileSize'] > MAX_PART_ENCRYPTED:
                raise _bad(21157, "Nieprawidłowy rozmiar części pakietu.",
                    ["Część %d przekracza 100 MB." % part['ordinalNumber']])
        session = self._new_session('Batch', ctx, form, 'SB')
        self._open_key(session, body['encryption'])
        session.offline_mode = bool(body.get('offlineMode'))
        session.file_size = batch['fileSize']
        session.file_hash = batch['fileHash']
        session.compression = batch.get('compressionType') or 'Zip'
        session.upload_deadline = session.created + (
            PART_UPLOAD_WINDOW * len(parts))
        for part in parts:
            session.parts[part['ordinalNumber']] = BatchPart(
                part['ordinalNumber'], part['fileSize'], part['fileHash'])
        self.sessions[session.reference] = session
        base = request.host_url.rstrip('/')
        requests_ = []
        for ordinal in ordinals:
            path = '/storage/batch/%s/%d' % (session.reference, ordinal)
            requests_.append({
                    'ordinalNumber': ordinal,
                    'method': 'PUT',
                    'url': '%s%s?%s' % (base, path, self._sign_url(path,
                            session.upload_deadline)),
                    'headers': {'x-ms-blob-type': 'BlockBlob'},
                    })
        return _json({'referenceNumber': session.reference,
                'partUploadRequests': requests_}, 201)

    def _close_batch(self, request, ctx, referenceNumber):
        self._require(ctx, SESSION_WRITE)
        session = self._session(ctx, referenceNumber, 'Batch')
        if not session.is_open and not session.key_error:
            code = session.visible_status()['code']
            raise _bad(21180, "Status sesji nie pozwala na wykonanie "
                "operacji.", ["Status sesji %s uniemożliwia jej zamknięcie."
                    % code])
        if self.clock.now() > session.upload_deadline:
            self._close(session, by_ksef=True)
            raise _bad(21208, "Czas oczekiwania na requesty upload lub "
                "finish został przekroczony.",
                ["Sesja anulowana, przekroczony czas wysyłki."])
        for ordinal, part in sorted(session.parts.items()):
            if part.data is None:
                raise _bad(21205, "Pakiet nie może być pusty.", [
                        "Nie przesłano zadeklarowanej '%d' części pliku."
                        % ordinal])
            if len(part.data) != part.size:
                raise _bad(21157, "Nieprawidłowy rozmiar części pakietu.", [
                        "Zadeklarowany rozmiar części '%d' nie zgadza się z "
                        "rzeczywistym." % ordinal])
        self._close(session)
        return Response(status=204)

    def _session_json(self, session, request):
        value = {
            'status': session.visible_status(),
            'dateCreated': iso(session.created),
            'dateUpdated': iso(session.updated),
            'validUntil': iso(session.valid_until),
            'invoiceCount': len(session.invoices),
            'successfulInvoiceCount': sum(1 for i in session.invoices
                if i.final and i.succeeded),
            'failedInvoiceCount': sum(1 for i in session.invoices
                if i.final and not i.succeeded),
            }
        if session.upo_pages and value['status']['code'] == 200:
            expires = self.clock.now() + DOWNLOAD_URL_LIFETIME
            value['upo'] = {'pages': [{
                        'referenceNumber': ref,
                        'downloadUrl': self._upo_url(request, session,
                            'S' + ref, expires),
                        'downloadUrlExpirationDate': iso(expires),
                        } for ref, _ in session.upo_pages]}
        return value

    def _session_status(self, request, ctx, referenceNumber):
        self._require(ctx, SESSION_READ)
        session = self._session(ctx, referenceNumber)
        return _json(self._session_json(session, request))

    def _invoice_json(self, invoice, request):
        visible = invoice.visible_status
        value = {
            'ordinalNumber': invoice.ordinal,
            'referenceNumber': invoice.reference,
            'invoiceHash': invoice.invoice_hash,
            'invoicingDate': iso(invoice.invoicing_date),
            'status': visible,
            }
        if invoice.file_name:
            value['invoiceFileName'] = invoice.file_name
        if invoice.invoice_number and invoice.final:
            value['invoiceNumber'] = invoice.invoice_number
        if visible['code'] == 200:
            expires = self.clock.now() + DOWNLOAD_URL_LIFETIME
            value.update({
                    'ksefNumber': invoice.ksef_number,
                    'acquisitionDate': iso(invoice.acquisition_date),
                    'permanentStorageDate': iso(
                        invoice.permanent_storage_date),
                    'upoDownloadUrl': self._upo_url(request,
                        invoice.session, 'I' + invoice.reference, expires),
                    'upoDownloadUrlExpirationDate': iso(expires),
                    'invoicingMode': invoice.mode,
                    })
        return value

    def _invoice(self, session, reference):
        for invoice in session.invoices:
            if invoice.reference == reference:
                return invoice
        raise _bad(21405, "Błąd walidacji danych wejściowych.", [
                "Faktura o numerze referencyjnym %s nie została znaleziona "
                "w sesji %s." % (reference, session.reference)])

    def _invoice_status(self, request, ctx, referenceNumber,
            invoiceReferenceNumber):
        self._require(ctx, SESSION_READ)
        session = self._session(ctx, referenceNumber)
        invoice = self._invoice(session, invoiceReferenceNumber)
        return _json(self._invoice_json(invoice, request))

    def _page(self, request, items, default_size=10):
        size = int(request.args.get('pageSize', default_size))
        token = request.headers.get('x-continuation-token')
        offset = 0
        if token:
            try:
                offset = int(base64.urlsafe_b64decode(
                        token.encode('ascii')).decode('ascii'))
                if offset < 0:
                    raise ValueError
            except (ValueError, UnicodeError):
                raise _bad(21418, "Przekazany token kontynuacji ma "
                    "nieprawidłowy format.") from None
        page = items[offset:offset + size]
        next_token = None
        if offset + size < len(items):
            next_token = base64.urlsafe_b64encode(
                str(offset + size).encode('ascii')).decode('ascii')
        return page, next_token

    def _session_invoices(self, request, ctx, referenceNumber):
        self._require(ctx, SESSION_READ)
        session = self._session(ctx, referenceNumber)
        page, token = self._page(request, session.invoices)
        return _json({'continuationToken': token,
                'invoices': [self._invoice_json(i, request) for i in page]})

    def _failed_invoices(self, request, ctx, referenceNumber):
        self._require(ctx, SESSION_READ)
        session = self._session(ctx, referenceNumber)
        failed = [i for i in session.invoices if i.final and not i.succeeded]
        page, token = self._page(request, failed)
        return _json({'continuationToken': token,
                'invoices': [self._invoice_json(i, request) for i in page]})

    def _list_sessions(self, request, ctx):
        self._require(ctx, SESSION_READ)
        kind = request.args['sessionType']
        wanted = set(request.args.getlist('statuses'))
        reference = request.args.get('referenceNumber')
        context = ctx['operation'].context

        def group(session):
            code = session.visible_status()['code']
            if code in (100, 150, 170):
                return 'InProgress'
            if code == 200:
                return 'Succeeded'
            if code == 440:
                return 'Cancelled'
            return 'Failed'

        items = [s for s in self.sessions.values()
            if s.kind == kind and s.auth.context == context
            and (not wanted or group(s) in wanted)
            and (not reference or s.reference == reference)]
        items.sort(key=lambda s: s.created, reverse=True)
        page, token = self._page(request, items)
        sessions = []
        for session in page:
            value = self._session_json(session, request)
            sessions.append({
                    'referenceNumber': session.reference,
                    'status': value['status'],
                    'dateCreated': value['dateCreated'],
                    'dateUpdated': value['dateUpdated'],
                    'validUntil': value['validUntil'],
                    'totalInvoiceCount': value['invoiceCount'],
                    'successfulInvoiceCount':
                        value['successfulInvoiceCount'],
                    'failedInvoiceCount': value['failedInvoiceCount'],
                    })
        return _json({'continuationToken': token, 'sessions': sessions})

    def _xml(self, document):
        return Response(document, 200, mimetype='application/xml',
            headers={'x-ms-meta-hash': crypto.sha256_b64(document)})

    def _upo_missing(self, detail):
        return _bad(21178, "Nie znaleziono UPO dla podanych kryteriów.",
            [detail])

    def _invoice_upo(self, request, ctx, referenceNumber,
            invoiceReferenceNumber):
        self._require(ctx, SESSION_READ)
        session = self._session(ctx, referenceNumber)
        invoice = self._invoice(session, invoiceReferenceNumber)
        if not invoice.succeeded:
            raise self._upo_missing("UPO faktury %s nie zostało znalezione."
                % invoiceReferenceNumber)
        return self._xml(invoice.upo)

    def _invoice_upo_by_number(self, request, ctx, referenceNumber,
            ksefNumber):
        self._require(ctx, SESSION_READ)
        session = self._session(ctx, referenceNumber)
        for invoice in session.invoices:
            if invoice.ksef_number == ksefNumber and invoice.succeeded:
                return self._xml(invoice.upo)
        raise self._upo_missing("UPO o numerze KSeF %s i numerze "
            "referencyjnym sesji %s nie zostało znalezione."
            % (ksefNumber, referenceNumber))

    def _session_upo(self, request, ctx, referenceNumber,
            upoReferenceNumber):
        self._require(ctx, SESSION_READ)
        session = self._session(ctx, referenceNumber)
        if session.visible_status()['code'] == 200:
            for ref, document in session.upo_pages:
                if ref == upoReferenceNumber:
                    return self._xml(document)
        raise self._upo_missing("UPO o numerze referencyjnym %s dla sesji "
            "%s nie zostało znalezione."
            % (upoReferenceNumber, referenceNumber))

    def _get_invoice(self, request, ctx, ksefNumber):
        self._require(ctx, ('InvoiceRead',))
        invoice = self.registry.by_number.get(ksefNumber)
        context_nip = ctx['operation'].context[1].split('-', 1)[0]
        if invoice is None or invoice.seller_nip != context_nip:
            raise _bad(21164, "Faktura o podanym identyfikatorze nie "
                "istnieje.", ["Faktura o numerze KSeF %s nie została "
                    "znaleziona." % ksefNumber])
        return self._xml(invoice.content)

    # --- pre-signed storage URLs

    def _sign_url(self, path, expires):
        expiry = str(int(expires.timestamp()))
        signature = hmac.new(self._url_secret,
            ('%s|%s' % (path, expiry)).encode(), hashlib.sha256).hexdigest()
        return 'se=%s&sig=%s' % (expiry, signature)

    def _url_ok(self, request):
        expiry = request.args.get('se', '')
        signature = request.args.get('sig', '')
        expected = hmac.new(self._url_secret,
            ('%s|%s' % (request.path, expiry)).encode(),
            hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            return False
        return expiry.isdigit() and \
            int(expiry) >= int(self.clock.now().timestamp())

    def _upo_url(self, request, session, key, expires):
        path = '/storage/upo/%s/%s' % (session.reference, key)
        return '%s%s?%s' % (request.host_url.rstrip('/'), path,
            self._sign_url(path, expires))

    def _storage_error(self, http_status, code, message):
        body = ('<?xml version="1.0" encoding="utf-8"?><Error><Code>%s</Code>'
            '<Message>%s</Message></Error>' % (code, message))
        return Response(body, http_status, mimetype='application/xml')

    def _upload_part(self, request, ref, ordinal):
        if not self._url_ok(request):
            return self._storage_error(403, 'AuthenticationFailed',
                "Signature invalid or expired.")
        session = self.sessions.get(ref)
        if session is None or ordinal not in session.parts:
            return self._storage_error(404, 'BlobNotFound', "No such part.")
        if not session.is_open or self.clock.now() > session.upload_deadline:
            return self._storage_error(403, 'AuthorizationFailure',
                "Upload window closed.")
        if request.headers.get('x-ms-blob-type') != 'BlockBlob':
            return self._storage_error(400, 'MissingRequiredHeader',
                "x-ms-blob-type: BlockBlob is required.")
        data = request.get_data()
        part = session.parts[ordinal]
        if len(data) != part.size:
            return self._storage_error(400, 'InvalidHeaderValue',
                "Part size differs from the declared fileSize.")
        if crypto.sha256_b64(data) != part.hash:
            return self._storage_error(400, 'Md5Mismatch',
                "Part hash differs from the declared fileHash.")
        part.data = data
        session.updated = self.clock.now()
        return Response(status=201)

    def _download_upo(self, request, ref, key):
        if not self._url_ok(request):
            return self._storage_error(403, 'AuthenticationFailed',
                "Signature invalid or expired.")
        session = self.sessions.get(ref)
        if session is not None:
            if key.startswith('I'):
                for invoice in session.invoices:
                    if invoice.reference == key[1:] and invoice.succeeded:
                        return self._xml(invoice.upo)
            elif key.startswith('S'):
                for upo_ref, document in session.upo_pages:
                    if upo_ref == key[1:]:
                        return self._xml(document)
        return self._storage_error(404, 'BlobNotFound', "No such UPO.")

    # --- KSeF tokens

    def _new_ksef_token(self, context, author, permissions, description,
            active=False):
        now = self.clock.now()
        reference = reference_number('EC', now)
        prefix = {'Nip': 'nip', 'InternalId': 'internalId',
            'NipVatUe': 'nipVatUe', 'PeppolId': 'peppolId'}[context[0]]
        secret = '%s|%s-%s|%s' % (reference, prefix, context[1],
            os.urandom(32).hex())
        token = KsefToken(reference, secret, context, author,
            list(permissions), description, now,
            ready_at=0.0 if active
            else time.monotonic() + self.processing_delay)
        self.ksef_tokens[reference] = token
        return token

    def _create_token(self, request, ctx):
        operation = ctx['operation']
        self._require(ctx, ('CredentialsManage',))
        body = request.get_json()
        if operation.context[0] not in ('Nip', 'InternalId'):
            raise _bad(26002, "Nie można wygenerować tokena dla obecnego "
                "typu kontekstu.", ["Kontekst %s; dozwolone: Nip, "
                    "InternalId." % operation.context[0]])
        missing = set(body['permissions']) - set(operation.permissions)
        if missing:
            raise _bad(26001, "Nie można nadać tokenowi uprawnień których "
                "nie posiadasz.", sorted(missing))
        token = self._new_ksef_token(operation.context, operation.subject,
            body['permissions'], body['description'])
        return _json({'referenceNumber': token.reference,
                'token': token.secret}, 202)

    def _ksef_token(self, ctx, reference):
        token = self.ksef_tokens.get(reference)
        if token is None or token.context != ctx['operation'].context:
            raise _bad(21405, "Błąd walidacji danych wejściowych.",
                ["Token %s nie został znaleziony." % reference])
        own = ctx['operation'].ksef_token_reference == reference
        if not own:
            self._require(ctx, ('CredentialsRead', 'CredentialsManage'))
        return token

    def _token_status(self, request, ctx, referenceNumber):
        token = self._ksef_token(ctx, referenceNumber)
        return _json(token.as_json())

    def _revoke_token(self, request, ctx, referenceNumber):
        token = self._ksef_token(ctx, referenceNumber)
        token.revoked = True
        return Response(status=204)

    def _list_tokens(self, request, ctx):
        self._require(ctx, ('CredentialsRead', 'CredentialsManage'))
        wanted = set(request.args.getlist('status'))
        items = [t for t in self.ksef_tokens.values()
            if t.context == ctx['operation'].context
            and (not wanted or t.status in wanted)]
        page, token = self._page(request, items)
        return _json({'continuationToken': token,
                'tokens': [t.as_json() for t in page]})

    # --- /testdata

    def _empty(self):
        return Response(status=200)

    def _td_person(self, request, ctx):
        body = request.get_json()
        if body['pesel'] in self.persons:
            raise _bad(30001, "Podmiot lub uprawnienie już istnieje.")
        self.persons[body['pesel']] = body['nip']
        return self._empty()

    def _td_person_remove(self, request, ctx):
        nip = request.get_json()['nip']
        for pesel in [p for p, n in self.persons.items() if n == nip]:
            del self.persons[pesel]
        return self._empty()

    def _td_subject(self, request, ctx):
        body = request.get_json()
        if body['subjectNip'] in self.subjects:
            raise _bad(30001, "Podmiot lub uprawnienie już istnieje.")
        self.subjects[body['subjectNip']] = body['subjectType']
        return self._empty()

    def _td_subject_remove(self, request, ctx):
        self.subjects.pop(request.get_json()['subjectNip'], None)
        return self._empty()

    def _td_permissions(self, request, ctx):
        body = request.get_json()
        key = (body['contextIdentifier']['value'],
            (body['authorizedIdentifier']['type'],
                body['authorizedIdentifier']['value']))
        self.grants.setdefault(key, set()).update(
            p['permissionType'] for p in body['permissions'])
        return self._empty()

    def _td_permissions_revoke(self, request, ctx):
        body = request.get_json()
        self.grants.pop((body['contextIdentifier']['value'],
                (body['authorizedIdentifier']['type'],
                    body['authorizedIdentifier']['value'])), None)
        return self._empty()

    def _td_attachment(self, request, ctx):
        self.attachments.add(request.get_json()['nip'])
        return self._empty()

    def _td_attachment_revoke(self, request, ctx):
        self.attachments.discard(request.get_json()['nip'])
        return self._empty()

    def _td_context(self, request):
        body = request.get_json() or {}
        context = body.get('contextIdentifier') or {}
        if not context.get('type') or not context.get('value'):
            raise _bad(21405, "Błąd walidacji danych wejściowych.",
                ["contextIdentifier: required"])
        return (context['type'], context['value'])

    def _td_block(self, request, ctx):
        self.blocked.add(self._td_context(request))
        return self._empty()

    def _td_unblock(self, request, ctx):
        self.blocked.discard(self._td_context(request))
        return self._empty()

    # --- Latarnia

    def _latarnia_status(self, request):
        return _json(self.latarnia.status())

    def _latarnia_messages(self, request):
        return _json(self.latarnia.messages())

    # --- /_sim administration

    def _admin_health(self, request):
        return _json({'status': 'ok', 'now': iso(self.clock.now())})

    def _admin_log(self, request):
        return _json(self.log.entries())

    def _admin_violations(self, request):
        return _json([{'method': m, 'path': p, 'status': s, 'problems': e}
                for m, p, s, e in self.contract_violations])

    def _admin_faults(self, request):
        return _json([f.as_json() for f in self.faults.list()])

    def _admin_add_fault(self, request):
        fault = self.faults.add_json(request.get_json(force=True))
        return _json(fault.as_json(), 201)

    def _admin_clear_faults(self, request):
        self.faults.clear()
        return Response(status=204)

    def _admin_remove_fault(self, request, fault_id):
        if not self.faults.remove(fault_id):
            return _json({'error': "no such fault"}, 404)
        return Response(status=204)

    def _admin_clock(self, request):
        return _json({'now': iso(self.clock.now())})

    def _admin_set_clock(self, request):
        body = request.get_json(force=True) or {}
        if 'set' in body:
            self.clock.set(body['set'])
        if 'freeze' in body:
            self.clock.freeze(body['freeze'])
        if body.get('unfreeze'):
            self.clock.unfreeze()
        if 'advance' in body:
            self.clock.advance(float(body['advance']))
        return _json({'now': iso(self.clock.now())})

    def _admin_rotate_key(self, request):
        body = request.get_json(force=True, silent=True) or {}
        key = self.rotate_key(body.get('usage', 'SymmetricKeyEncryption'),
            keep_old=bool(body.get('keepOld')))
        return _json(key.as_json(), 201)

    def _admin_ksef_token(self, request):
        body = request.get_json(force=True) or {}
        context = body.get('context') or body.get('contextIdentifier') or {}
        reference, secret = self.create_ksef_token(context['value'],
            context.get('type', 'Nip'),
            body.get('permissions', ['InvoiceWrite', 'InvoiceRead']),
            body.get('description', "Token utworzony w symulatorze"))
        return _json({'referenceNumber': reference, 'token': secret}, 201)

    def _admin_expire_tokens(self, request):
        self.expire_access_tokens()
        return Response(status=204)

    def _admin_close_session(self, request, ref):
        self.close_session(ref)
        return Response(status=204)

    def _admin_latarnia(self, request):
        return _json(self.latarnia.messages())

    def _admin_announce(self, request):
        body = request.get_json(force=True) or {}
        event_id = self.latarnia.announce(**body)
        return _json({'eventId': event_id}, 201)

    def _admin_end_event(self, request, event_id):
        body = request.get_json(force=True, silent=True) or {}
        self.latarnia.end(event_id, body.get('end'))
        return Response(status=204)

    def _admin_clear_latarnia(self, request):
        self.latarnia.clear()
        return Response(status=204)

    def _admin_auth_operations(self, request):
        "The authentications so far, oldest first (no token, no document)."
        return _json([{
                    'referenceNumber': o.reference,
                    'startDate': iso(o.start),
                    'category': o.category,
                    'contextIdentifier': {
                        'type': o.context[0], 'value': o.context[1]},
                    'status': o.status(),
                    'documentHash': o.document_hash,
                    } for o in sorted(self.auth_operations.values(),
                    key=lambda o: o.start)])

    def _admin_auth_document(self, request, ref):
        "The signed AuthTokenRequest of an authentication, byte for byte."
        operation = self.auth_operations.get(ref)
        if operation is None or operation.document is None:
            return _json({'error': "no such XAdES authentication"}, 404)
        return Response(operation.document, 200, mimetype='application/xml')


def _ip_allowed(address, policy):
    try:
        ip = ipaddress.ip_address(address or '')
    except ValueError:
        return False
    if ip.version != 4:
        return str(ip) in ('::1',) and not policy
    for text in policy.get('addresses', []):
        if ip == ipaddress.ip_address(text):
            return True
    for text in policy.get('ranges', []):
        low, high = text.split('-')
        if ipaddress.ip_address(low) <= ip <= ipaddress.ip_address(high):
            return True
    for text in policy.get('masks', []):
        if ip in ipaddress.ip_network(text, strict=False):
            return True
    return False


def _allowed_ips_from_json(policy):
    if not policy:
        return None
    result = {
        'addresses': policy.get('ip4Addresses') or [],
        'ranges': policy.get('ip4Ranges') or [],
        'masks': policy.get('ip4Masks') or [],
        }
    return result if any(result.values()) else None
