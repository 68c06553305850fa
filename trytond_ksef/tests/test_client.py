# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Unit tests of the KSeF client against an in-process fake KSeF
(httpx.MockTransport): request shapes checked against open-api.json, and
every fault path (network, lost answers, timeouts, 5xx, 429, 401, 21470,
closed sessions, refused invoices)."""
import base64
import datetime as dt
import functools
import io
import json
import logging
import os
import re
import tarfile
import unittest
import zipfile

import httpx
from cryptography.hazmat.primitives import serialization
from openapi_core import Config, OpenAPI
from openapi_core.contrib.werkzeug import (
    WerkzeugOpenAPIRequest,
    WerkzeugOpenAPIResponse,
)
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request as WerkzeugRequest
from werkzeug.wrappers import Response as WerkzeugResponse

from trytond_ksef import crypto, ksef_number, testcerts, xmlutil
from trytond_ksef.client import (
    FA3,
    AuthTokens,
    BatchPackage,
    BatchSession,
    CertificateCredentials,
    ContextIdentifier,
    KSeFClient,
    KSeFStatusClient,
    OnlineSession,
    PollPolicy,
    RetryPolicy,
    TokenCredentials,
    parse_retry_after,
)
from trytond_ksef.errors import (
    APIError,
    AuthenticationFailed,
    AuthenticationRequired,
    BatchLimitExceeded,
    ConfigurationError,
    DuplicateInvoice,
    Forbidden,
    InvoiceRejected,
    KSeFError,
    NetworkError,
    NoPublicKey,
    OutcomeUnknown,
    ProtocolError,
    PublicKeyRejected,
    RateLimited,
    RequestTimeout,
    ServerError,
    SessionClosed,
    SessionFailed,
    StillProcessing,
    is_transient,
)

BASE = 'https://api-test.ksef.mf.gov.pl/v2'
STORAGE = 'https://storage.ksef.example'
STATUS_URL = 'https://latarnia.ksef.example'
NIP = '5265877635'
DATA = os.path.join(os.path.dirname(__file__), 'data')
KSEF_TOKEN = ('20251010-EC-1DCE3E3000-12ECB5B36E-45|nip-5265877635|'
    '919f7044aa51416295f39bbb0bb91c7f2f07cea5d19b4ec3bd9a4b2d6ff1df7b9')
START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.timezone.utc)

STATUS_TEXT = {
    100: "W toku", 150: "Trwa przetwarzanie", 170: "Sesja zamknięta",
    200: "Sukces", 415: "Brak uprawnień", 430: "Błąd weryfikacji pliku",
    440: "Duplikat faktury", 445: "Brak poprawnych faktur",
    450: "Błąd weryfikacji semantyki dokumentu faktury",
    460: "Błąd certyfikatu", 550: "Operacja anulowana przez system",
    }


# ----------------------------------------------------------------------
# Helpers shared with the other client tests
# ----------------------------------------------------------------------
class FakeClock:
    "Aware UTC clock whose sleep() advances time and records the waits."

    def __init__(self, start=START):
        self.current = start
        self.sleeps = []

    def __call__(self):
        return self.current

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.current += dt.timedelta(seconds=seconds)

    def advance(self, **kwargs):
        self.current += dt.timedelta(**kwargs)


@functools.lru_cache(maxsize=None)
def ministry_keys():
    "Two distinct RSA keys with self-signed 'Ministerstwo Finansów' certs."
    result = {}
    for usage in ('KsefTokenEncryption', 'SymmetricKeyEncryption'):
        key = testcerts.new_key('rsa', 2048)
        cert_der, _ = testcerts.make_certificate(purpose=None, key=key,
            seal=True, nip='1111111111', common_name='Ministerstwo Finansów')
        result[usage] = (key, cert_der)
    return result


def key_entry(usage, key, cert_der, valid_from, valid_to):
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER,
        serialization.PublicFormat.SubjectPublicKeyInfo)
    return {
        'certificate': crypto.b64(cert_der),
        'certificateId': crypto.sha256_b64(cert_der),
        'publicKeyId': crypto.sha256_b64(spki),
        'validFrom': valid_from.isoformat(),
        'validTo': valid_to.isoformat(),
        'usage': [usage],
        }


@functools.lru_cache(maxsize=None)
def _openapi():
    with open(os.path.join(xmlutil.SCHEMA_DIR, 'open-api.json'),
            encoding='utf-8') as f:
        spec = json.load(f)
    config = Config(extra_media_type_deserializers={
        'application/xml': lambda data, **kw: (
            data.decode('utf-8') if isinstance(data, bytes) else data),
        'application/problem+json': lambda data, **kw: json.loads(data),
        })
    return OpenAPI.from_dict(spec, config=config)


def _werkzeug_request(request):
    url = request.url
    builder = EnvironBuilder(
        method=request.method,
        base_url='%s://%s' % (url.scheme, url.netloc.decode('ascii')),
        path=url.path,
        query_string=url.query.decode('ascii'),
        headers=[(k, v) for k, v in request.headers.items()
            if k.lower() != 'content-length'],
        data=request.content)
    return WerkzeugRequest(builder.get_environ())


def spec_errors(request, response=None):
    """Problems of an API request (and its answer) against open-api.json,
    described without values."""
    openapi = _openapi()
    wrequest = WerkzeugOpenAPIRequest(_werkzeug_request(request))
    problems = []
    result = openapi.unmarshal_request(wrequest)
    for error in result.errors:
        problems.append('request %s %s: %s %s' % (
            request.method, request.url.path, type(error).__name__,
            [getattr(e, 'message', '') for e in getattr(
                error.__cause__, 'schema_errors', ())]))
    if response is not None:
        wresponse = WerkzeugOpenAPIResponse(WerkzeugResponse(
            response.content, status=response.status_code,
            headers=list(response.headers.items())))
        result = openapi.unmarshal_response(wrequest, wresponse)
        for error in result.errors:
            problems.append('response %s %s %d: %s %s' % (
                request.method, request.url.path, response.status_code,
                type(error).__name__, [getattr(e, 'message', '')
                    for e in getattr(error.__cause__, 'schema_errors', ())]))
    return problems


def sample_invoice(nip=NIP, number=None, name='FA_3_Przyklad_1.xml'):
    "An MF sample invoice with the seller NIP (and number) replaced."
    with open(os.path.join(DATA, 'fa3', name), 'rb') as f:
        data = f.read()
    root = xmlutil.parse(data)
    ns = {'fa': xmlutil.NS_FA3}
    seller = root.find('fa:Podmiot1/fa:DaneIdentyfikacyjne/fa:NIP', ns)
    data = data.replace(
        b'<NIP>%s</NIP>' % seller.text.encode(),
        b'<NIP>%s</NIP>' % nip.encode(), 1)
    if number is not None:
        old = root.find('fa:Fa/fa:P_2', ns).text
        data = data.replace(b'<P_2>%s</P_2>' % old.encode(),
            b'<P_2>%s</P_2>' % number.encode(), 1)
    return data


def _json_response(status, body=None, headers=None):
    headers = dict(headers or {})
    if body is None:
        return httpx.Response(status, headers=headers)
    headers.setdefault('Content-Type', 'application/json')
    return httpx.Response(status, headers=headers,
        content=json.dumps(body).encode('utf-8'))


def ksef_exception(code, description, details=()):
    "Legacy ExceptionResponse body."
    return {'exception': {
        'exceptionDetailList': [{'exceptionCode': code,
            'exceptionDescription': description,
            'details': list(details)}],
        'referenceNumber': None, 'serviceCode': 'x',
        'timestamp': START.isoformat()}}


def problem(code, description, details=()):
    "RFC 7807 body (X-Error-Format: problem-details)."
    return {'title': 'Bad Request', 'status': 400, 'instance': '/x',
        'detail': description,
        'errors': [{'code': code, 'description': description,
            'details': list(details)}],
        'timestamp': START.isoformat(), 'traceId': 'trace'}


UPO_TEMPLATE = '''<?xml version="1.0" encoding="utf-8"?>
<Potwierdzenie xmlns="http://upo.schematy.mf.gov.pl/KSeF/v4-3">
<NazwaPodmiotuPrzyjmujacego>Ministerstwo Finansów - środowisko testowe \
(TE)</NazwaPodmiotuPrzyjmujacego>
<NumerReferencyjnySesji>{session}</NumerReferencyjnySesji>
{documents}</Potwierdzenie>'''
UPO_DOCUMENT = '''<Dokument><NipSprzedawcy>{nip}</NipSprzedawcy>\
<NumerKSeFDokumentu>{ksef}</NumerKSeFDokumentu>\
<SkrotDokumentu>{hash}</SkrotDokumentu></Dokument>
'''


class Fault:
    def __init__(self, method, pattern, kind, times, status, headers, body):
        self.method = method
        self.pattern = re.compile(pattern)
        self.kind = kind
        self.times = times
        self.status = status
        self.headers = headers or {}
        self.body = body


class FakeKSeF:
    """A small in-process KSeF for unit tests: the documented behaviour of
    the endpoints the client uses, with fault injection."""

    def __init__(self, clock, nip=NIP):
        self.clock = clock
        self.nip = nip
        self.requests = []
        self.problems = []
        self.faults = []
        self.keys = {}
        self.key_list = []
        self.key_fetches = 0
        now = clock()
        for usage, (key, cert_der) in ministry_keys().items():
            entry = key_entry(usage, key, cert_der,
                now - dt.timedelta(days=30), now + dt.timedelta(days=700))
            self.keys[entry['publicKeyId']] = key
            self.key_list.append(entry)
        self.known_key_ids = set(self.keys)
        self.challenges = {}
        self.auth_ops = {}
        self.auth_script = [100, 200]
        self.access = {}
        self.refresh = {}
        self.sessions = {}
        self.invoice_script = [150, 200]
        self.session_script = None
        self.uploads = {}
        self.latarnia_status = {'status': 'AVAILABLE', 'messages': []}
        self.latarnia_messages = []
        self.ksef_tokens = {KSEF_TOKEN}
        self.certificates = []
        self.next_auth_status = None
        self.refuse_refresh = False

    # -- plumbing -----------------------------------------------------
    def transport(self):
        return httpx.MockTransport(self)

    def fail(self, method, pattern, kind='status', *, times=1, status=None,
            headers=None, body=None):
        """Inject a fault on requests matching (method, path regex):
        'connect' (never sent), 'write' (broken while sending), 'lost'
        (processed, answer lost), 'lost_timeout' (processed, then a read
        timeout), 'timeout' (read timeout, not processed) or 'status'
        (answer `status` with `headers`/`body`, not processed)."""
        self.faults.append(Fault(method, pattern, kind, times, status,
            headers, body))

    def __call__(self, request):
        request.read()
        self.requests.append(request)
        for fault in self.faults:
            if (fault.times and fault.method == request.method
                    and fault.pattern.search(str(request.url))):
                fault.times -= 1
                return self._fault(fault, request)
        return self._handle(request)

    def _fault(self, fault, request):
        if fault.kind == 'connect':
            raise httpx.ConnectError('connection refused', request=request)
        if fault.kind == 'write':
            raise httpx.WriteError('connection reset', request=request)
        if fault.kind == 'timeout':
            raise httpx.ReadTimeout('timed out', request=request)
        if fault.kind in ('lost', 'lost_timeout'):
            self._handle(request)
            if fault.kind == 'lost':
                raise httpx.RemoteProtocolError(
                    'Server disconnected without sending a response',
                    request=request)
            raise httpx.ReadTimeout('timed out', request=request)
        body = fault.body
        if body is not None and not isinstance(body, bytes):
            return _json_response(fault.status, body, fault.headers)
        return httpx.Response(fault.status, headers=fault.headers,
            content=body or b'')

    def _handle(self, request):
        url = str(request.url)
        if url.startswith(STORAGE):
            return self._storage(request)
        if url.startswith(STATUS_URL):
            return self._latarnia(request)
        path = request.url.path
        assert path.startswith('/v2/'), path
        response = self._route(request, path[3:])
        problems = spec_errors(request, response)
        self.problems.extend(problems)
        return response

    def requests_to(self, method, pattern):
        return [r for r in self.requests if r.method == method
            and re.search(pattern, str(r.url))]

    def now(self):
        return self.clock()

    def reference(self, kind):
        return '%s-%s-%s-%s-%s' % (self.now().strftime('%Y%m%d'), kind,
            os.urandom(5).hex().upper(), os.urandom(5).hex().upper(),
            os.urandom(1).hex().upper())

    def _route(self, request, path):
        routes = [
            ('GET', r'/security/public-key-certificates', self.public_keys),
            ('POST', r'/auth/challenge', self.challenge),
            ('POST', r'/auth/ksef-token', self.auth_ksef_token),
            ('POST', r'/auth/xades-signature', self.auth_xades),
            ('POST', r'/auth/token/redeem', self.redeem),
            ('POST', r'/auth/token/refresh', self.refresh_token),
            ('DELETE', r'/auth/sessions/current', self.revoke),
            ('GET', r'/auth/(?P<ref>[^/]+)', self.auth_status),
            ('POST', r'/sessions/online', self.open_online),
            ('POST', r'/sessions/online/(?P<ref>[^/]+)/invoices',
                self.send_invoice),
            ('POST', r'/sessions/(?P<kind>online|batch)/(?P<ref>[^/]+)/close',
                self.close),
            ('POST', r'/sessions/batch', self.open_batch),
            ('GET', r'/sessions/(?P<ref>[^/]+)', self.session_status),
            ('GET', r'/sessions/(?P<ref>[^/]+)/invoices(?P<failed>/failed)?',
                self.session_invoices),
            ('GET', r'/sessions/(?P<ref>[^/]+)/invoices/ksef/(?P<ksef>[^/]+)'
                r'/upo', self.invoice_upo),
            ('GET', r'/sessions/(?P<ref>[^/]+)/invoices/(?P<inv>[^/]+)/upo',
                self.invoice_upo),
            ('GET', r'/sessions/(?P<ref>[^/]+)/invoices/(?P<inv>[^/]+)',
                self.invoice_status),
            ('GET', r'/sessions/(?P<ref>[^/]+)/upo/(?P<upo>[^/]+)',
                self.session_upo),
            ]
        for method, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if method == request.method and match:
                return handler(request, **match.groupdict())
        return _json_response(404, {'title': 'Not Found'})

    def _bad(self, code, description, details=()):
        return _json_response(400, problem(code, description, details),
            {'Content-Type': 'application/problem+json'})

    def _bearer(self, request):
        value = request.headers.get('Authorization', '')
        return value[7:] if value.startswith('Bearer ') else None

    def _unauthorized(self):
        return _json_response(401, {'title': 'Unauthorized', 'status': 401,
            'detail': 'Brak uwierzytelnienia', 'timestamp':
            self.now().isoformat()},
            {'Content-Type': 'application/problem+json'})

    def _authorized(self, request):
        token = self._bearer(request)
        return token in self.access and self.access[token] > self.now()

    # -- public keys and authentication --------------------------------
    def public_keys(self, request):
        self.key_fetches += 1
        return _json_response(200, self.key_list)

    def rotate_keys(self):
        "Withdraw every key now listed and publish fresh ones."
        self.known_key_ids = set()
        self.key_list = []
        self.keys = {}
        now = self.now()
        for usage in ('KsefTokenEncryption', 'SymmetricKeyEncryption'):
            key = testcerts.new_key('rsa', 2048)
            cert_der, _ = testcerts.make_certificate(purpose=None, key=key,
                seal=True, nip='1111111111')
            entry = key_entry(usage, key, cert_der,
                now - dt.timedelta(hours=1), now + dt.timedelta(days=700))
            self.keys[entry['publicKeyId']] = key
            self.key_list.append(entry)
            self.known_key_ids.add(entry['publicKeyId'])

    def challenge(self, request):
        value = self.reference('CR')
        now = self.now()
        self.challenges[value] = now
        return _json_response(200, {'challenge': value,
            'timestamp': now.isoformat(),
            'timestampMs': int(now.timestamp() * 1000),
            'clientIp': '127.0.0.1'})

    def _start_auth(self, context, method):
        reference = self.reference('AU')
        token = 'AUTHTOKEN-' + os.urandom(16).hex()
        self.auth_ops[reference] = {'token': token, 'context': context,
            'statuses': list(self.auth_script), 'redeemed': False,
            'method': method}
        return _json_response(202, {'referenceNumber': reference,
            'authenticationToken': {'token': token, 'validUntil': (
                self.now() + dt.timedelta(minutes=10)).isoformat()}})

    def auth_ksef_token(self, request):
        body = json.loads(request.content)
        if body.get('publicKeyId') not in self.known_key_ids:
            return self._bad(21470, "Przesłany identyfikator klucza jest "
                "nieznany lub wskazuje na wycofany klucz.")
        if body['challenge'] not in self.challenges:
            return self._bad(21111, "Nieprawidłowe wyzwanie autoryzacyjne.")
        key = self.keys[body['publicKeyId']]
        plain = crypto.rsa_oaep_decrypt(key,
            base64.b64decode(body['encryptedToken'])).decode('utf-8')
        token, stamp = plain.rsplit('|', 1)
        issued = self.challenges.pop(body['challenge'])
        if (token not in self.ksef_tokens
                or int(stamp) != int(issued.timestamp() * 1000)):
            self.auth_script = [450]
        context = body['contextIdentifier']
        return self._start_auth((context['type'], context['value']),
            'Token')

    def auth_xades(self, request):
        from trytond_ksef import xades
        try:
            verified = xades.verify(request.content)
        except xades.SignatureError as exc:
            return self._bad(exc.ksef_code or 9105, str(exc))
        if verified.challenge not in self.challenges:
            return self._bad(21111, "Nieprawidłowe wyzwanie autoryzacyjne.")
        del self.challenges[verified.challenge]
        self.certificates.append(verified.certificate_der)
        return self._start_auth(verified.context, 'XadesSignature')

    def auth_status(self, request, ref):
        op = self.auth_ops.get(ref)
        if op is None:
            return self._bad(21304, "Brak uwierzytelnienia.")
        if self._bearer(request) != op['token']:
            return self._unauthorized()
        code = (op['statuses'].pop(0) if len(op['statuses']) > 1
            else op['statuses'][0])
        op['status'] = code
        status = {'code': code, 'description': STATUS_TEXT.get(code, 'x')}
        if code == 460:
            status['details'] = ['Nieważny certyfikat.']
        return _json_response(200, {
            'startDate': self.now().isoformat(),
            'authenticationMethod': (
                'Token' if op['method'] == 'Token' else 'QualifiedSeal'),
            'authenticationMethodInfo': {'category': op['method'],
                'code': 'x', 'displayName': 'x'},
            'status': status})

    def _op_for_token(self, token):
        for op in self.auth_ops.values():
            if op['token'] == token:
                return op
        return None

    def _issue_access(self):
        token = 'ACCESSTOKEN-' + os.urandom(16).hex()
        valid = self.now() + dt.timedelta(minutes=15)
        self.access[token] = valid
        return {'token': token, 'validUntil': valid.isoformat()}

    def redeem(self, request):
        op = self._op_for_token(self._bearer(request))
        if op is None:
            return self._unauthorized()
        if op.get('status') != 200 or op['redeemed']:
            return self._bad(21301, "Brak autoryzacji.")
        op['redeemed'] = True
        refresh = 'REFRESHTOKEN-' + os.urandom(16).hex()
        valid = self.now() + dt.timedelta(days=7)
        self.refresh[refresh] = valid
        return _json_response(200, {'accessToken': self._issue_access(),
            'refreshToken': {'token': refresh,
                'validUntil': valid.isoformat()}})

    def refresh_token(self, request):
        token = self._bearer(request)
        if self.refuse_refresh:
            return self._bad(21301, "Brak autoryzacji.",
                ["Token KSeF został unieważniony."])
        if token not in self.refresh or self.refresh[token] <= self.now():
            return self._unauthorized()
        return _json_response(200, {'accessToken': self._issue_access()})

    def revoke(self, request):
        if not self._authorized(request):
            return self._unauthorized()
        self.refresh.clear()
        return httpx.Response(204)

    # -- sessions -------------------------------------------------------
    def _session_key(self, encryption):
        if encryption.get('publicKeyId') not in self.known_key_ids:
            return None
        key = self.keys[encryption['publicKeyId']]
        return crypto.SymmetricKey(
            crypto.rsa_oaep_decrypt(key, base64.b64decode(
                encryption['encryptedSymmetricKey'])),
            base64.b64decode(encryption['initializationVector']))

    def open_online(self, request):
        if not self._authorized(request):
            return self._unauthorized()
        body = json.loads(request.content)
        key = self._session_key(body['encryption'])
        if key is None:
            return self._bad(21470, "Przesłany identyfikator klucza jest "
                "nieznany lub wskazuje na wycofany klucz.")
        reference = self.reference('SO')
        valid = self.now() + dt.timedelta(hours=12)
        self.sessions[reference] = {'kind': 'online', 'key': key,
            'code': 100, 'invoices': [], 'created': self.now(),
            'valid_until': valid, 'form_code': body['formCode']}
        return _json_response(201, {'referenceNumber': reference,
            'validUntil': valid.isoformat()})

    def _new_invoice(self, session, content, file_name=None):
        root = xmlutil.parse(content)
        ns = {'fa': xmlutil.NS_FA3}
        seller = root.findtext(
            'fa:Podmiot1/fa:DaneIdentyfikacyjne/fa:NIP', namespaces=ns)
        invoice = {'reference': self.reference('EE'),
            'ordinal': len(session['invoices']) + 1,
            'hash': crypto.sha256_b64(content), 'content': content,
            'number': root.findtext('fa:Fa/fa:P_2', namespaces=ns),
            'seller': seller, 'file_name': file_name,
            'script': list(self.invoice_script), 'code': 100,
            'ksef': None, 'invoicing_date': self.now()}
        session['invoices'].append(invoice)
        return invoice

    def send_invoice(self, request, ref):
        if not self._authorized(request):
            return self._unauthorized()
        session = self.sessions.get(ref)
        if session is None:
            return self._bad(21173, "Brak sesji o wskazanym numerze "
                "referencyjnym.")
        if session['code'] != 100:
            return self._bad(21180, "Status sesji nie pozwala na "
                "wykonanie operacji.", ["Status sesji %d uniemożliwia "
                    "wysyłkę faktur." % session['code']])
        body = json.loads(request.content)
        encrypted = base64.b64decode(body['encryptedInvoiceContent'])
        if len(encrypted) != body['encryptedInvoiceSize']:
            return self._bad(21402, "Nieprawidłowy rozmiar pliku.")
        if crypto.sha256_b64(encrypted) != body['encryptedInvoiceHash']:
            return self._bad(21403, "Nieprawidłowy skrót pliku.")
        plain = session['key'].decrypt(encrypted)
        if (len(plain) != body['invoiceSize']
                or crypto.sha256_b64(plain) != body['invoiceHash']):
            return self._bad(21403, "Nieprawidłowy skrót pliku.")
        invoice = self._new_invoice(session, plain)
        invoice['offline'] = body.get('offlineMode', False)
        return _json_response(202, {'referenceNumber': invoice['reference']})

    def close(self, request, kind, ref):
        if not self._authorized(request):
            return self._unauthorized()
        session = self.sessions.get(ref)
        if session is None or session['kind'] != kind:
            return self._bad(21173, "Brak sesji o wskazanym numerze "
                "referencyjnym.")
        if session['code'] != 100:
            return self._bad(21180, "Status sesji nie pozwala na "
                "wykonanie operacji.")
        if kind == 'batch':
            error = self._process_batch(ref, session)
            if error is not None:
                return error
            session['script'] = [150, 200]
        else:
            session['script'] = [170, 200]
        session['code'] = session['script'].pop(0)
        return httpx.Response(204)

    def _advance_invoice(self, session, invoice):
        if invoice['script']:
            invoice['code'] = invoice['script'].pop(0)
            if invoice['code'] == 200 and not invoice['ksef']:
                invoice['ksef'] = ksef_number.generate(
                    invoice['seller'] or self.nip, self.now().date())
                invoice['acquired'] = self.now()

    def _invoice_json(self, session, invoice):
        code = invoice['code']
        status = {'code': code, 'description': STATUS_TEXT.get(code, 'x')}
        if isinstance(invoice.get('status_override'), dict):
            status.update(invoice['status_override'])
        data = {'ordinalNumber': invoice['ordinal'],
            'referenceNumber': invoice['reference'],
            'invoiceHash': invoice['hash'],
            'invoicingDate': invoice['invoicing_date'].isoformat(),
            'invoiceNumber': invoice['number'],
            'status': status}
        if invoice['file_name']:
            data['invoiceFileName'] = invoice['file_name']
        if invoice['ksef']:
            data['ksefNumber'] = invoice['ksef']
            data['acquisitionDate'] = invoice['acquired'].isoformat()
            data['invoicingMode'] = 'Online'
            data['upoDownloadUrl'] = '%s/upo/%s?sv=1&sig=UPOSIGSECRET' % (
                STORAGE, invoice['reference'])
            data['upoDownloadUrlExpirationDate'] = (
                self.now() + dt.timedelta(days=3)).isoformat()
        return data

    def invoice_status(self, request, ref, inv):
        if not self._authorized(request):
            return self._unauthorized()
        session = self.sessions.get(ref)
        invoice = self._find_invoice(session, inv)
        if invoice is None:
            return self._bad(21405, "Błąd walidacji danych wejściowych.")
        self._advance_invoice(session, invoice)
        return _json_response(200, self._invoice_json(session, invoice))

    def _find_invoice(self, session, inv=None, ksef=None):
        for invoice in (session or {}).get('invoices', ()):
            if inv and invoice['reference'] == inv:
                return invoice
            if ksef and invoice['ksef'] == ksef:
                return invoice
        return None

    def session_invoices(self, request, ref, failed=None):
        if not self._authorized(request):
            return self._unauthorized()
        session = self.sessions.get(ref)
        if session is None:
            return self._bad(21173, "Brak sesji.")
        size = int(request.url.params.get('pageSize', 10))
        start = int(request.headers.get('x-continuation-token') or 0)
        invoices = [i for i in session['invoices']
            if not failed or i['code'] >= 400]
        page = invoices[start:start + size]
        body = {'invoices': [self._invoice_json(session, i) for i in page]}
        if start + size < len(invoices):
            body['continuationToken'] = str(start + size)
        return _json_response(200, body)

    def session_status(self, request, ref):
        if not self._authorized(request):
            return self._unauthorized()
        session = self.sessions.get(ref)
        if session is None:
            return self._bad(21173, "Brak sesji o wskazanym numerze "
                "referencyjnym.")
        if session.get('script'):
            session['code'] = session['script'].pop(0)
            if session['code'] == 200:
                for invoice in session['invoices']:
                    while invoice['script']:
                        self._advance_invoice(session, invoice)
                if not any(i['code'] == 200 for i in session['invoices']):
                    session['code'] = 445 if session['invoices'] else 440
        code = session['code']
        body = {'status': {'code': code,
                'description': STATUS_TEXT.get(code, 'x')},
            'dateCreated': session['created'].isoformat(),
            'dateUpdated': self.now().isoformat(),
            'invoiceCount': len(session['invoices']),
            'successfulInvoiceCount': sum(
                1 for i in session['invoices'] if i['code'] == 200),
            'failedInvoiceCount': sum(
                1 for i in session['invoices'] if i['code'] >= 400)}
        if session['kind'] == 'online':
            body['validUntil'] = session['valid_until'].isoformat()
        if code == 200:
            session.setdefault('upo_ref', self.reference('EU'))
            body['upo'] = {'pages': [{
                'referenceNumber': session['upo_ref'],
                'downloadUrl': '%s/upo/%s?sv=1&sig=UPOSIGSECRET' % (
                    STORAGE, session['upo_ref']),
                'downloadUrlExpirationDate': (
                    self.now() + dt.timedelta(days=3)).isoformat()}]}
        return _json_response(200, body)

    def _upo_bytes(self, ref, invoices):
        documents = ''.join(UPO_DOCUMENT.format(nip=i['seller'],
                ksef=i['ksef'], hash=i['hash'])
            for i in invoices if i['ksef'])
        return UPO_TEMPLATE.format(session=ref,
            documents=documents).encode('utf-8')

    def _upo_response(self, content, bad_hash=False):
        digest = crypto.sha256_b64(content)
        if bad_hash:
            digest = crypto.sha256_b64(b'other')
        return httpx.Response(200, content=content, headers={
            'Content-Type': 'application/xml', 'x-ms-meta-hash': digest})

    def invoice_upo(self, request, ref, ksef=None, inv=None):
        if not self._authorized(request):
            return self._unauthorized()
        session = self.sessions.get(ref)
        invoice = self._find_invoice(session, inv=inv, ksef=ksef)
        if invoice is None or not invoice['ksef']:
            return self._bad(21178, "Nie znaleziono UPO dla podanych "
                "kryteriów.")
        return self._upo_response(self._upo_bytes(ref, [invoice]),
            getattr(self, 'bad_upo_hash', False))

    def session_upo(self, request, ref, upo):
        if not self._authorized(request):
            return self._unauthorized()
        session = self.sessions.get(ref)
        if session is None or session.get('upo_ref') != upo:
            return self._bad(21178, "Nie znaleziono UPO.")
        return self._upo_response(self._upo_bytes(ref,
            session['invoices']))

    # -- batch ----------------------------------------------------------
    def open_batch(self, request):
        if not self._authorized(request):
            return self._unauthorized()
        body = json.loads(request.content)
        key = self._session_key(body['encryption'])
        if key is None:
            return self._bad(21470, "Przesłany identyfikator klucza jest "
                "nieznany lub wskazuje na wycofany klucz.")
        reference = self.reference('SB')
        parts = body['batchFile']['fileParts']
        self.sessions[reference] = {'kind': 'batch', 'key': key,
            'code': 100, 'invoices': [], 'created': self.now(),
            'batch_file': body['batchFile'], 'uploaded': {},
            'offline': body.get('offlineMode', False)}
        return _json_response(201, {'referenceNumber': reference,
            'partUploadRequests': [{
                'ordinalNumber': p['ordinalNumber'], 'method': 'PUT',
                'url': '%s/batch/%s/%d?sv=1&sig=SASSECRET%d' % (
                    STORAGE, reference, p['ordinalNumber'],
                    p['ordinalNumber']),
                'headers': {'x-ms-blob-type': 'BlockBlob'}}
                for p in parts]})

    def _storage(self, request):
        match = re.fullmatch(r'/batch/([^/]+)/(\d+)', request.url.path)
        if request.method == 'GET' and request.url.path.startswith('/upo/'):
            reference = request.url.path[5:]
            for ref, session in self.sessions.items():
                if session.get('upo_ref') == reference:
                    return self._upo_response(self._upo_bytes(ref,
                        session['invoices']))
                invoice = self._find_invoice(session, inv=reference)
                if invoice is not None:
                    return self._upo_response(self._upo_bytes(ref,
                        [invoice]))
            return httpx.Response(404)
        if request.method != 'PUT' or not match:
            return httpx.Response(404)
        if 'Authorization' in request.headers:
            self.problems.append('Authorization sent to storage')
        if request.headers.get('x-ms-blob-type') != 'BlockBlob':
            self.problems.append('x-ms-blob-type missing')
        if 'chunked' in request.headers.get('Transfer-Encoding', ''):
            self.problems.append('chunked upload')
        session = self.sessions[match.group(1)]
        session['uploaded'][int(match.group(2))] = request.content
        return httpx.Response(201)

    def _process_batch(self, ref, session):
        batch_file = session['batch_file']
        archive = b''
        for part in batch_file['fileParts']:
            data = session['uploaded'].get(part['ordinalNumber'])
            if data is None:
                return self._bad(21205, "Pakiet nie może być pusty.")
            if len(data) != part['fileSize']:
                return self._bad(21157, "Nieprawidłowy rozmiar części "
                    "pakietu.")
            if crypto.sha256_b64(data) != part['fileHash']:
                self.problems.append('part hash mismatch')
            archive += session['key'].decrypt(data)
        if (len(archive) != batch_file['fileSize']
                or crypto.sha256_b64(archive) != batch_file['fileHash']):
            self.problems.append('package hash mismatch')
            session['failure'] = 405
            return None
        if batch_file.get('compressionType') == 'TarGz':
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                files = [(m.name, tar.extractfile(m).read())
                    for m in tar.getmembers()]
        else:
            with zipfile.ZipFile(io.BytesIO(archive)) as zf:
                files = [(n, zf.read(n)) for n in zf.namelist()]
        for name, content in files:
            self._new_invoice(session, content, file_name=name)
        return None

    # -- Latarnia -------------------------------------------------------
    def _latarnia(self, request):
        if request.url.path == '/status':
            return _json_response(200, self.latarnia_status)
        if request.url.path == '/messages':
            return _json_response(200, self.latarnia_messages)
        return httpx.Response(404)


class ClientTestCase(unittest.TestCase):
    "A fake KSeF and a client with a fake clock."

    def setUp(self):
        self.clock = FakeClock()
        self.ksef = FakeKSeF(self.clock)
        self.saved_tokens = []

    def tearDown(self):
        self.assertEqual(self.ksef.problems, [])

    def client(self, **kwargs):
        kwargs.setdefault('credentials',
            TokenCredentials(ContextIdentifier.nip(NIP), KSEF_TOKEN))
        kwargs.setdefault('on_tokens', self.saved_tokens.append)
        client = KSeFClient(BASE, status_url=STATUS_URL,
            transport=self.ksef.transport(), clock=self.clock,
            sleep=self.clock.sleep, **kwargs)
        self.addCleanup(client.close)
        return client

    def authenticated(self, **kwargs):
        client = self.client(**kwargs)
        client.authenticate(TokenCredentials(ContextIdentifier.nip(NIP),
            KSEF_TOKEN))
        return client


# ----------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------
class TestPublicKeys(ClientTestCase):

    def test_selection_usage_validity_latest(self):
        "Pick the key of the usage, valid now, with the latest validFrom."
        key, cert = ministry_keys()['SymmetricKeyEncryption']
        other_key, other_cert = ministry_keys()['KsefTokenEncryption']
        now = self.clock()
        day = dt.timedelta(days=1)
        entries = [
            key_entry('SymmetricKeyEncryption', key, cert,
                now - 10 * day, now + 10 * day),
            key_entry('SymmetricKeyEncryption', other_key, other_cert,
                now - 2 * day, now + 10 * day),
            # Latest validFrom, but not valid yet / expired:
            key_entry('SymmetricKeyEncryption', key, cert,
                now + day, now + 10 * day),
            key_entry('SymmetricKeyEncryption', key, cert,
                now - day, now - dt.timedelta(seconds=1)),
            key_entry('KsefTokenEncryption', key, cert,
                now - day, now + 10 * day),
            ]
        entries[1]['publicKeyId'] = 'B' * 43 + '='
        self.ksef.key_list = entries
        client = self.client()
        chosen = client.public_key('SymmetricKeyEncryption')
        self.assertEqual(chosen.public_key_id, 'B' * 43 + '=')
        self.assertEqual(chosen.public_key().public_numbers(),
            other_key.public_key().public_numbers())
        # Cached:
        client.public_key('KsefTokenEncryption')
        self.assertEqual(self.ksef.key_fetches, 1)
        # Stale after the TTL:
        self.clock.advance(hours=7)
        client.public_key('KsefTokenEncryption')
        self.assertEqual(self.ksef.key_fetches, 2)

    def test_bare_public_key(self):
        "The open-api example lists a bare SubjectPublicKeyInfo."
        key, cert = ministry_keys()['KsefTokenEncryption']
        entry = self.ksef.key_list[0]
        entry['certificate'] = crypto.b64(key.public_key().public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo))
        client = self.client()
        chosen = client.public_key(entry['usage'][0])
        self.assertIsNotNone(chosen.public_key())

    def test_no_valid_key(self):
        for entry in self.ksef.key_list:
            entry['validTo'] = (self.clock() - dt.timedelta(days=1)
                ).isoformat()
        client = self.client()
        with self.assertRaises(NoPublicKey) as cm:
            client.public_key('SymmetricKeyEncryption')
        self.assertEqual(cm.exception.code, 'ksef_no_public_key')
        self.assertEqual(cm.exception.params['usage'],
            'SymmetricKeyEncryption')
        self.assertFalse(cm.exception.transient)

    def test_rotated_key_21470_refetch_and_retry(self):
        "21470 on open session: reload the keys, retry once, succeed."
        client = self.authenticated()
        fetches = self.ksef.key_fetches
        self.ksef.rotate_keys()
        session = client.open_online_session()
        self.assertEqual(self.ksef.key_fetches, fetches + 1)
        self.assertIn(session.public_key_id, self.ksef.known_key_ids)
        self.assertEqual(len(self.ksef.requests_to('POST',
            r'/sessions/online$')), 2)

    def test_rotated_key_token_auth(self):
        client = self.client()
        client.fetch_public_keys()
        self.ksef.rotate_keys()
        tokens = client.authenticate()
        self.assertTrue(tokens.access_token)
        self.assertEqual(self.ksef.key_fetches, 2)

    def test_21470_persisting(self):
        client = self.authenticated()
        self.ksef.fail('POST', r'/sessions/online$', status=400, times=2,
            body=problem(21470, "Klucz nieznany"),
            headers={'Content-Type': 'application/problem+json'})
        with self.assertRaises(PublicKeyRejected) as cm:
            client.open_online_session()
        self.assertEqual(cm.exception.params['exception_code'], 21470)
        self.assertFalse(cm.exception.transient)


class TestAuthentication(ClientTestCase):

    def test_ksef_token(self):
        client = self.client()
        tokens = client.authenticate()
        self.assertEqual(self.saved_tokens, [tokens])
        self.assertIn(tokens.access_token, self.ksef.access)
        self.assertEqual(tokens.context, ContextIdentifier('Nip', NIP))
        request = self.ksef.requests_to('POST', r'/auth/ksef-token$')[0]
        body = json.loads(request.content)
        self.assertEqual(body['contextIdentifier'],
            {'type': 'Nip', 'value': NIP})
        token_key_entry = next(e for e in self.ksef.key_list
            if e['usage'] == ['KsefTokenEncryption'])
        self.assertEqual(body['publicKeyId'], token_key_entry['publicKeyId'])
        # Status polled until final: one wait between 100 and 200.
        self.assertEqual(len(self.ksef.requests_to('GET', r'/auth/\d')), 2)
        self.assertEqual(self.clock.sleeps, [1.0])
        # Bearer tokens: operation token for status and redeem.
        op_token = next(iter(self.ksef.auth_ops.values()))['token']
        for request in (self.ksef.requests_to('GET', r'/auth/\d')
                + self.ksef.requests_to('POST', r'/redeem')):
            self.assertEqual(request.headers['Authorization'],
                'Bearer ' + op_token)

    def test_tokens_hidden_and_serialisable(self):
        client = self.client()
        tokens = client.authenticate()
        for text in (repr(tokens), str(tokens), repr(client)):
            self.assertNotIn(tokens.access_token, text)
            self.assertNotIn(tokens.refresh_token, text)
        data = json.loads(json.dumps(tokens.to_dict()))
        self.assertEqual(AuthTokens.from_dict(data), tokens)
        # A new client reuses them without authenticating again.
        count = len(self.ksef.requests)
        other = self.client(tokens=AuthTokens.from_dict(data),
            credentials=None)
        other.open_online_session()
        self.assertFalse(any('/auth/' in str(r.url)
            for r in self.ksef.requests[count:]))

    def test_credentials_repr(self):
        key = testcerts.cached_key('rsa')
        credentials = CertificateCredentials(ContextIdentifier.nip(NIP),
            b'\x30\x82DER', key)
        self.assertNotIn('DER', repr(credentials))
        self.assertNotIn('KEY', repr(TokenCredentials(
            ContextIdentifier.nip(NIP), 'SECRET-KEY')))

    def test_status_failed(self):
        self.ksef.auth_script = [100, 460]
        client = self.client()
        with self.assertRaises(AuthenticationFailed) as cm:
            client.authenticate()
        error = cm.exception
        self.assertEqual(error.code, 'ksef_authentication_failed')
        self.assertEqual(error.params['status_code'], 460)
        self.assertIn('Nieważny certyfikat', error.params['details'])
        self.assertFalse(error.transient)
        self.assertIsNone(client.tokens)

    def test_status_cancelled_by_system_is_transient(self):
        self.ksef.auth_script = [550]
        with self.assertRaises(AuthenticationFailed) as cm:
            self.client().authenticate()
        self.assertTrue(cm.exception.transient)

    def test_status_unknown_error_is_transient(self):
        self.ksef.auth_script = [100, 500]
        with self.assertRaises(AuthenticationFailed) as cm:
            self.client().authenticate()
        self.assertTrue(cm.exception.transient)

    def test_context_forms(self):
        "A bare NIP or a (type, value) pair are accepted as context."
        client = self.client(credentials=None)
        client.authenticate_with_token(NIP, KSEF_TOKEN)
        client.authenticate_with_token(('Nip', NIP), KSEF_TOKEN)
        bodies = [json.loads(r.content) for r in
            self.ksef.requests_to('POST', r'/auth/ksef-token$')]
        self.assertEqual([b['contextIdentifier'] for b in bodies],
            [{'type': 'Nip', 'value': NIP}] * 2)

    def test_wrong_token(self):
        client = self.client(credentials=TokenCredentials(
            ContextIdentifier.nip(NIP), 'not-the-token'))
        with self.assertRaises(AuthenticationFailed) as cm:
            client.authenticate()
        self.assertEqual(cm.exception.params['status_code'], 450)

    def test_status_never_final(self):
        self.ksef.auth_script = [100]
        client = self.client(poll=PollPolicy(auth_timeout=30))
        with self.assertRaises(StillProcessing) as cm:
            client.authenticate()
        self.assertTrue(cm.exception.transient)
        self.assertEqual(cm.exception.params['status_code'], 100)
        self.assertLessEqual(sum(self.clock.sleeps), 30)
        self.assertGreater(len(self.clock.sleeps), 3)
        self.assertEqual(self.clock.sleeps[:3], [1.0, 1.5, 2.25])

    def test_no_credentials(self):
        client = self.client(credentials=None)
        with self.assertRaises(AuthenticationRequired) as cm:
            client.open_online_session()
        self.assertEqual(cm.exception.code, 'ksef_authentication_required')
        self.assertEqual(self.ksef.requests_to('POST', r'/sessions'), [])

    def test_expired_access_token_refreshed_before_call(self):
        client = self.authenticated()
        first = client.tokens.access_token
        self.clock.advance(minutes=20)
        client.open_online_session()
        self.assertNotEqual(client.tokens.access_token, first)
        self.assertEqual(len(self.ksef.requests_to('POST', r'/refresh$')), 1)
        self.assertEqual(len(self.ksef.requests_to('POST',
            r'/ksef-token$')), 1)
        self.assertEqual(self.saved_tokens[-1], client.tokens)
        request = self.ksef.requests_to('POST', r'/refresh$')[0]
        self.assertEqual(request.headers['Authorization'],
            'Bearer ' + client.tokens.refresh_token)

    def test_401_refresh_and_retry(self):
        "KSeF refuses an access token it considers expired: refresh, retry."
        client = self.authenticated()
        first = client.tokens.access_token
        del self.ksef.access[first]
        session = client.open_online_session()
        self.assertTrue(session.reference_number)
        attempts = self.ksef.requests_to('POST', r'/sessions/online$')
        self.assertEqual(len(attempts), 2)
        self.assertEqual(attempts[0].headers['Authorization'],
            'Bearer ' + first)
        self.assertEqual(attempts[1].headers['Authorization'],
            'Bearer ' + client.tokens.access_token)

    def test_401_twice(self):
        client = self.authenticated(credentials=None)
        self.ksef.fail('POST', r'/sessions/online$', status=401, times=5,
            body={'title': 'Unauthorized', 'status': 401, 'detail': 'x',
                'timestamp': START.isoformat()})
        with self.assertRaises(AuthenticationRequired):
            client.open_online_session()
        self.assertEqual(len(self.ksef.requests_to('POST',
            r'/sessions/online$')), 2)

    def test_refresh_refused_reauthenticates(self):
        client = self.authenticated()
        self.clock.advance(minutes=20)
        self.ksef.refuse_refresh = True
        client.open_online_session()
        self.assertEqual(len(self.ksef.requests_to('POST',
            r'/ksef-token$')), 2)

    def test_refresh_refused_without_credentials(self):
        client = self.authenticated(credentials=None)
        self.clock.advance(minutes=20)
        self.ksef.refuse_refresh = True
        with self.assertRaises(AuthenticationRequired) as cm:
            client.open_online_session()
        self.assertEqual(cm.exception.params['reason'], 'refresh refused')

    def test_refresh_token_expired(self):
        client = self.authenticated()
        self.clock.advance(days=8)
        client.open_online_session()
        self.assertEqual(len(self.ksef.requests_to('POST', r'/refresh$')), 0)
        self.assertEqual(len(self.ksef.requests_to('POST',
            r'/ksef-token$')), 2)

    def test_revoke(self):
        client = self.authenticated()
        client.revoke_session()
        self.assertIsNone(client.tokens)
        self.assertIsNone(self.saved_tokens[-1])
        self.assertEqual(self.ksef.refresh, {})
        self.assertEqual(len(self.ksef.requests_to('DELETE',
            r'/auth/sessions/current$')), 1)

    def test_xades_rsa_and_ec(self):
        try:
            from trytond_ksef import xades  # noqa: F401
        except ImportError:
            self.skipTest("trytond_ksef.xades is not available")
        for key_type in ('rsa', 'ec'):
            with self.subTest(key_type=key_type):
                cert_der, key = testcerts.make_certificate(
                    'authentication', nip=NIP, key_type=key_type, seal=True)
                client = self.client(credentials=CertificateCredentials(
                    ContextIdentifier.nip(NIP), cert_der, key))
                tokens = client.authenticate()
                self.assertIn(tokens.access_token, self.ksef.access)
                self.assertEqual(self.ksef.certificates[-1], cert_der)
                request = self.ksef.requests_to('POST',
                    r'/auth/xades-signature')[-1]
                self.assertEqual(request.headers['Content-Type'],
                    'application/xml')
                self.assertNotIn('verifyCertificateChain',
                    str(request.url))
                op = [o for o in self.ksef.auth_ops.values()
                    if o['method'] == 'XadesSignature'][-1]
                self.assertEqual(op['context'], ('nip', NIP))

    def test_xades_verify_chain_parameter(self):
        try:
            from trytond_ksef import xades  # noqa: F401
        except ImportError:
            self.skipTest("trytond_ksef.xades is not available")
        cert_der, key = testcerts.make_certificate('authentication',
            nip=NIP)
        client = self.client()
        client.authenticate_with_certificate(ContextIdentifier.nip(NIP),
            cert_der, key, verify_certificate_chain=False)
        request = self.ksef.requests_to('POST', r'/auth/xades-signature')[0]
        self.assertEqual(request.url.params['verifyCertificateChain'],
            'false')


class TestOnlineSession(ClientTestCase):

    def test_flow(self):
        client = self.authenticated()
        session = client.open_online_session()
        self.assertEqual(session.form_code, FA3)
        request = self.ksef.requests_to('POST', r'/sessions/online$')[0]
        body = json.loads(request.content)
        self.assertEqual(body['formCode'], {'systemCode': 'FA (3)',
            'schemaVersion': '1-0E', 'value': 'FA'})
        server_session = self.ksef.sessions[session.reference_number]
        self.assertEqual(server_session['key'], session.key)

        invoice = sample_invoice()
        sent = client.send_invoice(session, invoice)
        body = json.loads(self.ksef.requests_to('POST',
            r'/invoices$')[0].content)
        self.assertEqual(body['invoiceHash'], crypto.sha256_b64(invoice))
        self.assertEqual(body['invoiceSize'], len(invoice))
        self.assertEqual(body['encryptedInvoiceSize'],
            crypto.encrypted_size(len(invoice)))
        self.assertIs(body['offlineMode'], False)
        self.assertNotIn('hashOfCorrectedInvoice', body)
        self.assertEqual(sent.invoice_hash, crypto.sha256_b64(invoice))

        status = client.wait_for_invoice(session, sent.reference_number)
        self.assertTrue(status.is_success)
        self.assertIsNone(status.error())
        self.assertTrue(status.ksef_number.startswith(NIP + '-'))
        ksef_number.validate(status.ksef_number)
        self.assertEqual(status.invoice_hash, sent.invoice_hash)

        upo = client.get_invoice_upo(session, ksef_number=status.ksef_number)
        self.assertIn(status.ksef_number.encode(), upo.content)
        self.assertEqual(upo.sha256, crypto.sha256_b64(upo.content))
        upo2 = client.get_invoice_upo(session,
            invoice_reference=sent.reference_number)
        self.assertEqual(upo2.content, upo.content)
        upo3 = client.download_upo(status.upo_download_url)
        self.assertEqual(upo3.content, upo.content)
        storage = self.ksef.requests_to('GET', r'storage')[0]
        self.assertNotIn('Authorization', storage.headers)

        client.close_online_session(session)
        final = client.wait_for_session(session)
        self.assertTrue(final.is_success)
        self.assertEqual(final.successful_invoice_count, 1)
        upos = client.get_session_upos(final)
        self.assertEqual(len(upos), 1)
        self.assertIn(status.ksef_number.encode(), upos[0].content)

    def test_offline_and_technical_correction_fields(self):
        client = self.authenticated()
        session = client.open_online_session()
        corrected = crypto.sha256_b64(b'rejected original')
        sent = client.send_invoice(session, sample_invoice(),
            offline_mode=True, hash_of_corrected_invoice=corrected)
        body = json.loads(self.ksef.requests_to('POST',
            r'/invoices$')[0].content)
        self.assertIs(body['offlineMode'], True)
        self.assertEqual(body['hashOfCorrectedInvoice'], corrected)
        self.assertTrue(sent.offline_mode)

    def test_session_serialisation(self):
        client = self.authenticated()
        session = client.open_online_session()
        secret = crypto.b64(session.key.key)
        self.assertNotIn(secret, repr(session))
        self.assertNotIn(secret, str(session))
        self.assertIn(session.reference_number, repr(session))
        data = json.loads(json.dumps(session.to_dict()))
        restored = OnlineSession.from_dict(data)
        self.assertEqual(restored, session)
        sent = client.send_invoice(restored, sample_invoice())
        status = client.wait_for_invoice(restored.reference_number,
            sent.reference_number)
        self.assertTrue(status.is_success)

    def test_session_closed_by_ksef(self):
        client = self.authenticated()
        session = client.open_online_session()
        self.ksef.sessions[session.reference_number]['code'] = 440
        with self.assertRaises(SessionClosed) as cm:
            client.send_invoice(session, sample_invoice())
        error = cm.exception
        self.assertEqual(error.code, 'ksef_session_closed')
        self.assertTrue(error.transient)
        self.assertEqual(error.params['session'], session.reference_number)
        self.assertEqual(error.params['exception_code'], 21180)
        self.assertEqual(error.exception_codes, (21180,))
        self.assertIsInstance(error, APIError)

    def test_session_unknown(self):
        client = self.authenticated()
        session = client.open_online_session()
        del self.ksef.sessions[session.reference_number]
        with self.assertRaises(SessionClosed) as cm:
            client.send_invoice(session, sample_invoice())
        self.assertEqual(cm.exception.params['exception_code'], 21173)

    def test_unknown_session_on_status_query(self):
        "21173 on a status query is an APIError, not a closed session."
        client = self.authenticated()
        with self.assertRaises(APIError) as cm:
            client.get_session_status('20260302-SO-0000000000-0000000000-00')
        self.assertNotIsInstance(cm.exception, SessionClosed)
        self.assertEqual(cm.exception.params['exception_code'], 21173)
        self.assertFalse(cm.exception.transient)

    def test_session_expired_locally(self):
        client = self.authenticated()
        session = client.open_online_session()
        self.clock.advance(hours=13)
        count = len(self.ksef.requests)
        with self.assertRaises(SessionClosed) as cm:
            client.send_invoice(session, sample_invoice())
        self.assertEqual(cm.exception.params['reason'], 'expired')
        self.assertEqual(len(self.ksef.requests), count)

    def test_invoice_rejected(self):
        client = self.authenticated()
        session = client.open_online_session()
        self.ksef.invoice_script = [450]
        sent = client.send_invoice(session, sample_invoice())
        invoice = self.ksef.sessions[session.reference_number][
            'invoices'][0]
        invoice['status_override'] = {'details': [
            "Data wystawienia faktury jest późniejsza niż data przyjęcia"]}
        status = client.wait_for_invoice(session, sent.reference_number)
        self.assertTrue(status.is_final)
        self.assertFalse(status.is_success)
        error = status.error()
        self.assertIsInstance(error, InvoiceRejected)
        self.assertEqual(error.code, 'ksef_invoice_rejected')
        self.assertEqual(error.params['status_code'], 450)
        self.assertIn('Data wystawienia', error.params['details'])
        self.assertFalse(error.transient)
        self.assertIn('450', str(error))

    def test_invoice_duplicate(self):
        client = self.authenticated()
        session = client.open_online_session()
        self.ksef.invoice_script = [440]
        sent = client.send_invoice(session, sample_invoice())
        invoice = self.ksef.sessions[session.reference_number][
            'invoices'][0]
        original = ksef_number.generate(NIP, self.clock().date())
        invoice['status_override'] = {
            'details': ["Duplikat faktury."],
            'extensions': {'originalKsefNumber': original,
                'originalSessionReferenceNumber': 'X' * 36}}
        status = client.wait_for_invoice(session, sent.reference_number)
        self.assertEqual(status.original_ksef_number, original)
        error = status.error()
        self.assertIsInstance(error, DuplicateInvoice)
        self.assertEqual(error.code, 'ksef_invoice_duplicate')
        self.assertEqual(error.params['original_ksef_number'], original)

    def test_invoice_cancelled_by_system_transient(self):
        client = self.authenticated()
        session = client.open_online_session()
        self.ksef.invoice_script = [550]
        sent = client.send_invoice(session, sample_invoice())
        status = client.wait_for_invoice(session, sent.reference_number)
        self.assertTrue(status.error().transient)

    def test_invoice_unknown_error_transient(self):
        client = self.authenticated()
        session = client.open_online_session()
        self.ksef.invoice_script = [500]
        sent = client.send_invoice(session, sample_invoice())
        status = client.wait_for_invoice(session, sent.reference_number)
        self.assertTrue(status.error().transient)
        self.assertEqual(status.error().params['status_code'], 500)

    def test_invoice_still_processing(self):
        client = self.authenticated()
        session = client.open_online_session()
        self.ksef.invoice_script = [150] * 1000
        sent = client.send_invoice(session, sample_invoice())
        with self.assertRaises(StillProcessing) as cm:
            client.wait_for_invoice(session, sent.reference_number,
                timeout=20)
        self.assertEqual(cm.exception.params['reference'],
            sent.reference_number)

    def test_session_failed(self):
        client = self.authenticated()
        session = client.open_online_session()
        client.close_online_session(session)
        status = client.wait_for_session(session)
        self.assertEqual(status.code, 440)
        error = status.error()
        self.assertIsInstance(error, SessionFailed)
        self.assertEqual(error.params['status_code'], 440)
        self.assertEqual(status.upo_pages, ())

    def test_list_and_find(self):
        client = self.authenticated()
        session = client.open_online_session()
        hashes = []
        for number in range(12):
            xml = sample_invoice(number='FV/%d' % number)
            hashes.append(client.send_invoice(session, xml).invoice_hash)
        found = list(client.list_session_invoices(session, page_size=10))
        self.assertEqual([s.invoice_hash for s in found], hashes)
        self.assertEqual(len(self.ksef.requests_to('GET',
            r'/invoices\?')), 2)
        status = client.find_session_invoice(session, hashes[7])
        self.assertEqual(status.invoice_number, 'FV/7')
        self.assertIsNone(client.find_session_invoice(session,
            crypto.sha256_b64(b'none')))

    def test_bytes_required(self):
        client = self.authenticated()
        session = client.open_online_session()
        with self.assertRaises(TypeError):
            client.send_invoice(session, sample_invoice().decode('utf-8'))

    def test_upo_hash_mismatch(self):
        client = self.authenticated()
        session = client.open_online_session()
        sent = client.send_invoice(session, sample_invoice())
        client.wait_for_invoice(session, sent.reference_number)
        self.ksef.bad_upo_hash = True
        with self.assertRaises(ProtocolError) as cm:
            client.get_invoice_upo(session,
                invoice_reference=sent.reference_number)
        self.assertEqual(cm.exception.params['reason'], 'UPO hash mismatch')

    def test_upo_needs_a_key(self):
        client = self.authenticated()
        with self.assertRaises(ConfigurationError):
            client.get_invoice_upo('x' * 36)


class TestFaults(ClientTestCase):

    def setUp(self):
        super().setUp()
        self.client_ = self.authenticated()
        self.session = self.client_.open_online_session()
        self.invoices = self.ksef.sessions[
            self.session.reference_number]['invoices']
        del self.clock.sleeps[:]

    def test_connection_refused_before_send_is_retried(self):
        "Nothing reached KSeF: even sending an invoice is repeated."
        self.ksef.fail('POST', r'/invoices$', 'connect')
        sent = self.client_.send_invoice(self.session, sample_invoice())
        self.assertEqual(len(self.invoices), 1)
        self.assertEqual(self.invoices[0]['reference'],
            sent.reference_number)
        self.assertEqual(self.clock.sleeps, [1.0])

    def test_reset_while_sending_is_retried(self):
        self.ksef.fail('POST', r'/invoices$', 'write')
        self.client_.send_invoice(self.session, sample_invoice())
        self.assertEqual(len(self.invoices), 1)

    def test_connection_refused_every_time(self):
        self.ksef.fail('GET', r'/sessions/', 'connect', times=10)
        with self.assertRaises(NetworkError) as cm:
            self.client_.get_session_status(self.session)
        self.assertTrue(cm.exception.transient)
        self.assertEqual(cm.exception.code, 'ksef_network_error')
        self.assertEqual(self.clock.sleeps, [1.0, 2.0, 4.0])

    def test_answer_lost_after_accept_outcome_unknown(self):
        self.ksef.fail('POST', r'/invoices$', 'lost')
        invoice = sample_invoice()
        with self.assertRaises(OutcomeUnknown) as cm:
            self.client_.send_invoice(self.session, invoice)
        error = cm.exception
        self.assertTrue(error.transient)
        self.assertEqual(error.code, 'ksef_outcome_unknown')
        self.assertEqual(error.params['operation'], 'send_invoice')
        self.assertEqual(error.params['invoice_hash'],
            crypto.sha256_b64(invoice))
        self.assertEqual(error.params['session'],
            self.session.reference_number)
        # Not blindly repeated: KSeF has exactly one invoice.
        self.assertEqual(len(self.invoices), 1)
        self.assertEqual(len(self.ksef.requests_to('POST',
            r'/invoices$')), 1)
        # Reconciliation by hash.
        found = self.client_.find_session_invoice(self.session,
            error.params['invoice_hash'])
        self.assertEqual(found.reference_number,
            self.invoices[0]['reference'])

    def test_timeout_after_accept_outcome_unknown(self):
        self.ksef.fail('POST', r'/invoices$', 'lost_timeout')
        with self.assertRaises(OutcomeUnknown) as cm:
            self.client_.send_invoice(self.session, sample_invoice())
        self.assertEqual(cm.exception.params['reason'], 'ReadTimeout')
        self.assertEqual(len(self.invoices), 1)

    def test_open_session_answer_lost(self):
        self.ksef.fail('POST', r'/sessions/online$', 'lost')
        with self.assertRaises(OutcomeUnknown) as cm:
            self.client_.open_online_session()
        self.assertEqual(cm.exception.params['operation'],
            'open_online_session')

    def test_server_error_on_send_is_outcome_unknown(self):
        self.ksef.fail('POST', r'/invoices$', status=502)
        with self.assertRaises(OutcomeUnknown) as cm:
            self.client_.send_invoice(self.session, sample_invoice())
        self.assertEqual(cm.exception.params['reason'], 'HTTP 502')
        self.assertEqual(len(self.ksef.requests_to('POST',
            r'/invoices$')), 1)

    def test_unreadable_answer_on_send_is_outcome_unknown(self):
        self.ksef.fail('POST', r'/invoices$', status=202, body=b'<html>')
        with self.assertRaises(OutcomeUnknown):
            self.client_.send_invoice(self.session, sample_invoice())

    def test_unreadable_answer_on_get_is_protocol_error(self):
        self.ksef.fail('GET', r'/sessions/', status=200, body=b'<html>')
        with self.assertRaises(ProtocolError) as cm:
            self.client_.get_session_status(self.session)
        self.assertFalse(cm.exception.transient)

    def test_malformed_answer_on_get(self):
        self.ksef.fail('GET', r'/invoices/', status=200,
            body={'status': {'code': 200}, 'invoicingDate': 'yesterday'})
        with self.assertRaises(ProtocolError):
            self.client_.get_invoice_status(self.session, 'X' * 36)

    def test_timeout_on_get_is_retried(self):
        self.ksef.fail('GET', r'/sessions/', 'timeout', times=2)
        status = self.client_.get_session_status(self.session)
        self.assertEqual(status.code, 100)
        self.assertEqual(self.clock.sleeps, [1.0, 2.0])

    def test_timeout_every_time(self):
        self.ksef.fail('GET', r'/sessions/', 'timeout', times=10)
        with self.assertRaises(RequestTimeout) as cm:
            self.client_.get_session_status(self.session)
        self.assertTrue(is_transient(cm.exception))
        self.assertEqual(len(self.ksef.requests_to('GET', r'/sessions/')),
            4)

    def test_server_error_on_get_is_retried(self):
        self.ksef.fail('GET', r'/sessions/', status=503, times=3)
        status = self.client_.get_session_status(self.session)
        self.assertEqual(status.code, 100)
        self.assertEqual(self.clock.sleeps, [1.0, 2.0, 4.0])

    def test_server_error_every_time(self):
        self.ksef.fail('GET', r'/sessions/', status=500, times=10)
        with self.assertRaises(ServerError) as cm:
            self.client_.get_session_status(self.session)
        self.assertEqual(cm.exception.params['status'], 500)
        self.assertTrue(cm.exception.transient)

    def test_backoff_capped(self):
        client = self.client(retry=RetryPolicy(max_attempts=6,
            backoff_initial=2, backoff_max=5))
        client.tokens = self.client_.tokens
        self.ksef.fail('GET', r'/sessions/', status=500, times=10)
        with self.assertRaises(ServerError):
            client.get_session_status(self.session)
        self.assertEqual(self.clock.sleeps, [2, 4, 5, 5, 5])

    def test_rate_limited_short_wait(self):
        "429 with a short Retry-After: wait and repeat (even a create)."
        self.ksef.fail('POST', r'/invoices$', status=429,
            headers={'Retry-After': '3'},
            body={'status': {'code': 429, 'description': 'Too Many Requests',
                'details': ['x']}})
        self.client_.send_invoice(self.session, sample_invoice())
        self.assertEqual(self.clock.sleeps, [3])
        self.assertEqual(len(self.invoices), 1)

    def test_rate_limited_long_wait_raises(self):
        self.ksef.fail('GET', r'/sessions/', status=429,
            headers={'Retry-After': '120'})
        with self.assertRaises(RateLimited) as cm:
            self.client_.get_session_status(self.session)
        error = cm.exception
        self.assertEqual(error.retry_after, 120)
        self.assertEqual(error.params['retry_after'], 120)
        self.assertTrue(error.transient)
        self.assertEqual(error.code, 'ksef_rate_limited')
        self.assertEqual(self.clock.sleeps, [])

    def test_rate_limited_policy_never_waits(self):
        client = self.client(retry=RetryPolicy(rate_limit_max_wait=0))
        client.tokens = self.client_.tokens
        self.ksef.fail('GET', r'/sessions/', status=429,
            headers={'Retry-After': '1'})
        with self.assertRaises(RateLimited) as cm:
            client.get_session_status(self.session)
        self.assertEqual(cm.exception.retry_after, 1)

    def test_rate_limited_http_date(self):
        when = self.clock() + dt.timedelta(seconds=5)
        self.ksef.fail('GET', r'/sessions/', status=429, headers={
            'Retry-After': when.strftime('%a, %d %b %Y %H:%M:%S GMT')})
        self.client_.get_session_status(self.session)
        self.assertEqual(self.clock.sleeps, [5])

    def test_rate_limited_repeatedly(self):
        self.ksef.fail('GET', r'/sessions/', status=429, times=10,
            headers={'Retry-After': '2'})
        with self.assertRaises(RateLimited):
            self.client_.get_session_status(self.session)
        self.assertEqual(self.clock.sleeps, [2, 2, 2])

    def test_parse_retry_after(self):
        self.assertEqual(parse_retry_after('7'), 7)
        self.assertIsNone(parse_retry_after(None))
        self.assertIsNone(parse_retry_after('soon'))
        self.assertEqual(parse_retry_after(
            'Mon, 02 Mar 2026 09:00:10 GMT', START), 10)

    def test_api_error_problem_details(self):
        self.ksef.fail('POST', r'/invoices$', status=400,
            headers={'Content-Type': 'application/problem+json'},
            body=problem(21405, "Błąd walidacji danych wejściowych.",
                ["invoiceHash: długość"]))
        with self.assertRaises(APIError) as cm:
            self.client_.send_invoice(self.session, sample_invoice())
        error = cm.exception
        self.assertEqual(type(error), APIError)
        self.assertFalse(error.transient)
        self.assertEqual(error.code, 'ksef_api_error')
        self.assertEqual(error.params['exception_code'], 21405)
        self.assertEqual(error.params['details'], "invoiceHash: długość")
        self.assertIn('21405', str(error))

    def test_api_error_legacy_format(self):
        self.ksef.fail('POST', r'/auth/challenge', status=400,
            body=ksef_exception(9105, "Nieprawidłowy podpis."))
        with self.assertRaises(APIError) as cm:
            self.client_.get_challenge()
        self.assertEqual(cm.exception.params['exception_code'], 9105)
        self.assertEqual(cm.exception.params['description'],
            "Nieprawidłowy podpis.")

    def test_forbidden(self):
        self.ksef.fail('GET', r'/sessions/', status=403, body={
            'title': 'Forbidden', 'status': 403, 'detail': 'Brak uprawnień',
            'reasonCode': 'missing-permissions',
            'timestamp': START.isoformat()})
        with self.assertRaises(Forbidden) as cm:
            self.client_.get_session_status(self.session)
        self.assertEqual(cm.exception.params['reason_code'],
            'missing-permissions')
        self.assertFalse(cm.exception.transient)

    def test_close_answer_lost_reconciled(self):
        self.ksef.fail('POST', r'/close$', 'lost')
        self.client_.close_online_session(self.session)
        self.assertEqual(len(self.ksef.requests_to('POST', r'/close$')), 1)

    def test_close_never_reached(self):
        self.ksef.fail('POST', r'/close$', 'connect')
        self.client_.close_online_session(self.session)
        self.assertEqual(
            self.ksef.sessions[self.session.reference_number]['code'], 170)

    def test_close_lost_and_status_unreachable(self):
        self.ksef.fail('POST', r'/close$', 'timeout')
        self.ksef.fail('GET', r'/sessions/', 'connect', times=10)
        with self.assertRaises(OutcomeUnknown):
            self.client_.close_online_session(self.session)

    def test_status_get_404_http_error(self):
        self.ksef.fail('GET', r'/sessions/', status=404)
        with self.assertRaises(KSeFError) as cm:
            self.client_.get_session_status(self.session)
        self.assertEqual(cm.exception.code, 'ksef_http_error')
        self.assertEqual(cm.exception.params['status'], 404)

    def test_timeout_configured(self):
        seen = []

        def handler(request):
            seen.append(request.extensions.get('timeout'))
            return self.ksef(request)
        client = KSeFClient(BASE, transport=httpx.MockTransport(handler),
            timeout=httpx.Timeout(7.0, connect=3.0), clock=self.clock,
            sleep=self.clock.sleep)
        self.addCleanup(client.close)
        client.fetch_public_keys()
        self.assertEqual(seen[0], {'connect': 3.0, 'read': 7.0,
            'write': 7.0, 'pool': 7.0})

    def test_default_timeout(self):
        seen = []

        def handler(request):
            seen.append(request.extensions.get('timeout'))
            return self.ksef(request)
        client = KSeFClient(BASE, transport=httpx.MockTransport(handler))
        self.addCleanup(client.close)
        client.fetch_public_keys()
        self.assertTrue(all(seen[0].values()))


class TestBatchPackage(unittest.TestCase):

    def invoices(self, count):
        return [('fv-%03d.xml' % n, sample_invoice(number='FV/%d' % n))
            for n in range(count)]

    def test_parts_encrypted_separately(self):
        invoices = self.invoices(5)
        with BatchPackage.build(invoices, part_size=4000) as package:
            self.assertGreater(len(package.parts), 1)
            plain = b''
            for part in package.parts:
                encrypted = package.read_part(part.ordinal_number)
                self.assertEqual(len(encrypted), part.size)
                self.assertEqual(crypto.sha256_b64(encrypted), part.hash)
                self.assertEqual(part.size,
                    crypto.encrypted_size(part.plain_size))
                self.assertLessEqual(part.plain_size, 4000)
                plain += package.key.decrypt(encrypted)
            self.assertEqual(len(plain), package.file_size)
            self.assertEqual(crypto.sha256_b64(plain), package.file_hash)
            with zipfile.ZipFile(io.BytesIO(plain)) as zf:
                self.assertEqual(zf.namelist(), [n for n, _ in invoices])
                for name, data in invoices:
                    self.assertEqual(zf.read(name), data)
            self.assertEqual([e.invoice_hash for e in package.entries],
                [crypto.sha256_b64(d) for _, d in invoices])
            body = package.batch_file_json()
            self.assertEqual(body['compressionType'], 'Zip')
            self.assertEqual([p['ordinalNumber'] for p in body['fileParts']],
                list(range(1, len(package.parts) + 1)))
        self.assertTrue(package.closed)

    def test_chunked_reading(self):
        with BatchPackage.build(self.invoices(3)) as package:
            self.assertEqual(len(package.parts), 1)
            chunks = list(package.iter_part(1, chunk_size=1000))
            self.assertTrue(all(len(c) <= 1000 for c in chunks))
            self.assertGreater(len(chunks), 1)

    def test_exact_multiple_of_part_size(self):
        from trytond_ksef.client.batch import _encrypt_parts
        key = crypto.SymmetricKey.generate()
        archive = io.BytesIO(os.urandom(64))
        spool = io.BytesIO()
        file_hash, parts = _encrypt_parts(archive, spool, key, 16)
        self.assertEqual(len(parts), 4)
        self.assertEqual([p.size for p in parts], [32] * 4)
        self.assertEqual([p.offset for p in parts], [0, 32, 64, 96])
        self.assertEqual(file_hash, crypto.sha256_b64(archive.getvalue()))
        plain = b''.join(key.decrypt(spool.getvalue()[p.offset:p.offset
            + p.size]) for p in parts)
        self.assertEqual(plain, archive.getvalue())

    def test_generator_and_bytes_items(self):
        def generate():
            for n in range(3):
                yield sample_invoice(number='G/%d' % n)
        with BatchPackage.build(generate()) as package:
            self.assertEqual([e.file_name for e in package.entries],
                ['invoice-00001.xml', 'invoice-00002.xml',
                    'invoice-00003.xml'])

    def test_targz(self):
        invoices = self.invoices(2)
        with BatchPackage.build(invoices, compression='TarGz') as package:
            plain = b''.join(package.key.decrypt(package.read_part(
                p.ordinal_number)) for p in package.parts)
            with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
                self.assertEqual(tar.getnames(), [n for n, _ in invoices])

    def test_limits(self):
        with self.assertRaises(BatchLimitExceeded) as cm:
            BatchPackage.build(self.invoices(3), max_invoices=2)
        self.assertEqual(cm.exception.params['limit'], 'number of invoices')
        with self.assertRaises(BatchLimitExceeded) as cm:
            BatchPackage.build(self.invoices(3), part_size=100, max_parts=5)
        self.assertEqual(cm.exception.params['limit'], 'number of parts')
        with self.assertRaises(BatchLimitExceeded) as cm:
            BatchPackage.build(self.invoices(3), max_size=1000)
        self.assertEqual(cm.exception.params['limit'], 'package size')
        with self.assertRaises(ConfigurationError):
            BatchPackage.build([])
        with self.assertRaises(ConfigurationError):
            BatchPackage.build(self.invoices(1), part_size=10 ** 9)
        with self.assertRaises(ConfigurationError):
            BatchPackage.build([('../x.xml', b'<a/>')])
        with self.assertRaises(ConfigurationError):
            BatchPackage.build([('a.xml', b'<a/>'), ('a.xml', b'<b/>')])
        with self.assertRaises(ConfigurationError):
            BatchPackage.build([('a.xml', b'<a/>')], compression='Rar')

    def test_default_part_size(self):
        "A part stays within 100 MB even after encryption."
        from trytond_ksef.client import DEFAULT_PART_SIZE, MAX_PART_SIZE
        self.assertLessEqual(crypto.encrypted_size(DEFAULT_PART_SIZE),
            MAX_PART_SIZE)


class TestBatchSession(ClientTestCase):

    def test_flow(self):
        client = self.authenticated()
        invoices = [('fv-%d.xml' % n, sample_invoice(number='B/%d' % n))
            for n in range(4)]
        with BatchPackage.build(invoices, part_size=5000) as package:
            self.assertGreater(len(package.parts), 1)
            session = client.send_batch(package)
        self.assertIsInstance(session, BatchSession)
        request = self.ksef.requests_to('POST', r'/sessions/batch$')[0]
        body = json.loads(request.content)
        self.assertEqual(body['batchFile']['fileHash'], package.file_hash)
        self.assertIs(body['offlineMode'], False)
        puts = self.ksef.requests_to('PUT', r'storage')
        self.assertEqual(len(puts), len(package.parts))
        for put, part in zip(puts, package.parts):
            self.assertEqual(int(put.headers['Content-Length']), part.size)
        for text in (repr(session), str(session)):
            self.assertNotIn('SASSECRET', text)
            self.assertNotIn(crypto.b64(session.key.key), text)
        restored = BatchSession.from_dict(json.loads(json.dumps(
            session.to_dict())))
        self.assertEqual(restored, session)

        status = client.wait_for_session(session)
        self.assertTrue(status.is_success)
        self.assertEqual(status.successful_invoice_count, 4)
        statuses = list(client.list_session_invoices(session))
        self.assertEqual(sorted(s.invoice_file_name for s in statuses),
            sorted(n for n, _ in invoices))
        by_hash = {s.invoice_hash: s for s in statuses}
        for entry in package.entries:
            self.assertTrue(by_hash[entry.invoice_hash].ksef_number)
        upo = client.get_session_upos(session)[0]
        for s in statuses:
            self.assertIn(s.ksef_number.encode(), upo.content)
        upo = client.download_upo(status.upo_pages[0].download_url)
        self.assertIn(statuses[0].ksef_number.encode(), upo.content)

    def test_offline_targz(self):
        client = self.authenticated()
        with BatchPackage.build([sample_invoice()],
                compression='TarGz') as package:
            session = client.send_batch(package, offline_mode=True)
        body = json.loads(self.ksef.requests_to('POST',
            r'/sessions/batch$')[0].content)
        self.assertIs(body['offlineMode'], True)
        self.assertEqual(body['batchFile']['compressionType'], 'TarGz')
        self.assertTrue(client.wait_for_session(session).is_success)

    def test_upload_retried(self):
        client = self.authenticated()
        self.ksef.fail('PUT', r'/batch/.*/1\?', status=503)
        self.ksef.fail('PUT', r'/batch/.*/2\?', 'lost')
        with BatchPackage.build([sample_invoice(number='U/%d' % n)
                for n in range(3)], part_size=3000) as package:
            session = client.send_batch(package)
        self.assertEqual(len(self.ksef.requests_to('PUT', r'/1\?')), 2)
        self.assertEqual(len(self.ksef.requests_to('PUT', r'/2\?')), 2)
        self.assertTrue(client.wait_for_session(session).is_success)

    def test_upload_window_expired(self):
        client = self.authenticated()
        self.ksef.fail('PUT', r'/batch/', status=403, body=(
            b'<?xml version="1.0"?><Error><Code>AuthenticationFailed'
            b'</Code></Error>'), headers={'Content-Type': 'application/xml'})
        with BatchPackage.build([sample_invoice()]) as package:
            session = client.open_batch_session(package)
            with self.assertRaises(Forbidden) as cm:
                client.upload_batch_parts(session, package)
        self.assertEqual(cm.exception.params['part'], 1)

    def test_close_with_missing_part(self):
        client = self.authenticated()
        with BatchPackage.build([sample_invoice(number='M/%d' % n)
                for n in range(3)], part_size=3000) as package:
            session = client.open_batch_session(package)
            client.upload_batch_parts(session, package, [1])
            with self.assertRaises(APIError) as cm:
                client.close_batch_session(session)
        self.assertEqual(cm.exception.params['exception_code'], 21205)

    def test_closed_package(self):
        client = self.authenticated()
        package = BatchPackage.build([sample_invoice()])
        package.close()
        with self.assertRaises(ConfigurationError):
            client.open_batch_session(package)


class TestStatusService(ClientTestCase):

    def test_status_and_messages(self):
        message = {'id': 'm-1', 'eventId': 7, 'category': 'FAILURE',
            'type': 'FAILURE_START', 'title': 'Awaria KSeF',
            'text': 'Trwa awaria', 'start': '2026-03-02T08:00:00+01:00',
            'end': None, 'version': 2,
            'published': '2026-03-02T08:05:00+01:00'}
        self.ksef.latarnia_status = {'status': 'FAILURE',
            'messages': [message]}
        self.ksef.latarnia_messages = [message, dict(message, id='m-2',
            type='FAILURE_END', end='2026-03-02T12:00:00Z')]
        client = self.client()
        status = client.get_ksef_status()
        self.assertEqual(status.state, 'FAILURE')
        self.assertFalse(status.is_available)
        self.assertEqual(status.messages[0].category, 'FAILURE')
        self.assertEqual(status.messages[0].start,
            dt.datetime(2026, 3, 2, 7, 0, tzinfo=dt.timezone.utc))
        self.assertIsNone(status.messages[0].end)
        messages = client.get_ksef_messages()
        self.assertEqual([m.id for m in messages], ['m-1', 'm-2'])
        self.assertEqual(messages[1].end,
            dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.timezone.utc))
        self.assertEqual(messages[0].event_id, 7)

    def test_available(self):
        status = KSeFStatusClient(STATUS_URL,
            transport=self.ksef.transport()).get_status()
        self.assertTrue(status.is_available)
        self.assertEqual(status.messages, ())

    def test_bad_answer(self):
        self.ksef.latarnia_status = {'nothing': 1}
        with self.assertRaises(ProtocolError):
            self.client().get_ksef_status()
        self.ksef.latarnia_messages = {'messages': 'x'}
        with self.assertRaises(ProtocolError):
            self.client().get_ksef_messages()

    def test_unreachable(self):
        self.ksef.fail('GET', r'latarnia', 'connect', times=10)
        with self.assertRaises(NetworkError):
            self.client().get_ksef_status()

    def test_no_url(self):
        client = KSeFClient(BASE, transport=self.ksef.transport())
        self.addCleanup(client.close)
        with self.assertRaises(ConfigurationError):
            client.get_ksef_status()


class TestEnvironment(unittest.TestCase):

    def test_for_environment(self):
        client = KSeFClient.for_environment('demo')
        self.addCleanup(client.close)
        self.assertEqual(client.api_url, 'https://api-demo.ksef.mf.gov.pl/v2')
        self.assertEqual(client.status_url,
            'https://api-latarnia-test.ksef.mf.gov.pl')
        client = KSeFClient.for_environment('test',
            {'api_url': 'http://127.0.0.1:9/v2/'})
        self.addCleanup(client.close)
        self.assertEqual(client.api_url, 'http://127.0.0.1:9/v2')


class TestErrors(unittest.TestCase):

    def test_codes_and_messages(self):
        error = RateLimited(operation='send_invoice', retry_after=30)
        self.assertEqual(str(error),
            "KSeF rate limit reached (send_invoice); try again in 30 s")
        self.assertEqual(error.params, {'operation': 'send_invoice',
            'retry_after': 30})
        error = OutcomeUnknown(operation='open_online_session',
            reason='ReadTimeout')
        self.assertIn('open_online_session', str(error))
        self.assertIn('{missing}', str(KSeFError("x {missing}")))

    def test_every_error_has_a_distinct_code(self):
        from trytond_ksef import errors
        codes = {}
        for name in errors.__all__:
            cls = getattr(errors, name)
            if isinstance(cls, type) and issubclass(cls, KSeFError):
                self.assertRegex(cls.code, r'^ksef_[a-z_]+$')
                self.assertNotIn(cls.code, codes, name)
                codes[cls.code] = name


class TestLogging(ClientTestCase):

    def test_no_secret_in_logs(self):
        "A whole flow, with faults, logs no token, key, URL secret or data."
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setLevel(logging.DEBUG)
        root = logging.getLogger()
        old_level = root.level
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        try:
            client = self.client()
            self.ksef.fail('POST', r'/invoices$', status=429,
                headers={'Retry-After': '1'})
            self.ksef.fail('GET', r'/sessions/.*/invoices/', status=503)
            client.authenticate()
            session = client.open_online_session()
            invoice = sample_invoice()
            sent = client.send_invoice(session, invoice)
            status = client.wait_for_invoice(session, sent.reference_number)
            client.download_upo(status.upo_download_url)
            self.ksef.fail('POST', r'/invoices$', 'lost')
            with self.assertRaises(OutcomeUnknown) as cm:
                client.send_invoice(session, sample_invoice(number='L/1'))
            errors = [str(cm.exception), repr(cm.exception)]
            client.close_online_session(session)
            self.clock.advance(minutes=20)
            with BatchPackage.build([sample_invoice(number='B/1')]) as pkg:
                batch = client.send_batch(pkg)
            client.wait_for_session(batch)
            client.revoke_session()
        finally:
            root.removeHandler(handler)
            root.setLevel(old_level)
        output = stream.getvalue() + '\n'.join(errors)
        self.assertIn(session.reference_number, output)
        secrets = [KSEF_TOKEN, KSEF_TOKEN.split('|')[-1], 'SASSECRET',
            'UPOSIGSECRET', crypto.b64(session.key.key),
            crypto.b64(batch.key.key), crypto.b64(session.key.iv),
            'Przyklad', 'ABC Sp']
        secrets += list(self.ksef.access) + list(self.ksef.refresh)
        secrets += [op['token'] for op in self.ksef.auth_ops.values()]
        for secret in secrets:
            self.assertNotIn(secret, output)
        self.assertNotIn(invoice.decode('utf-8')[200:260], output)


if __name__ == '__main__':
    unittest.main()
