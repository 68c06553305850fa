# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""In-memory state of the simulator: clock, identifiers, MF keys, tokens,
authentication operations, sessions and invoices.

Nothing here talks HTTP; :mod:`.app` maps requests onto these objects.
"""
import base64
import datetime as dt
import functools
import hashlib
import hmac
import json
import os
import threading
import time
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from trytond_ksef import crypto

UTC = dt.timezone.utc
try:
    from zoneinfo import ZoneInfo
    WARSAW = ZoneInfo('Europe/Warsaw')
except Exception:  # pragma: no cover - no tz database on the host
    WARSAW = dt.timezone(dt.timedelta(hours=1))

# Lifetimes.  KSeF documents only the challenge (10 min) and the refresh
# token (up to 7 days); the access token of the open-api example JWT lives
# 900 s and the authentication token example 2700 s [DOCS SILENT].
CHALLENGE_LIFETIME = dt.timedelta(minutes=10)
AUTHENTICATION_TOKEN_LIFETIME = dt.timedelta(minutes=45)
ACCESS_TOKEN_LIFETIME = dt.timedelta(minutes=15)
REFRESH_TOKEN_LIFETIME = dt.timedelta(days=7)
SESSION_LIFETIME = dt.timedelta(hours=12)
PART_UPLOAD_WINDOW = dt.timedelta(minutes=20)
DOWNLOAD_URL_LIFETIME = dt.timedelta(hours=1)
MF_KEY_VALIDITY = dt.timedelta(days=730)


class Clock:
    """The simulator's notion of "now" (aware UTC datetimes).

    By default it follows the wall clock.  Tests may :meth:`set` it (it then
    runs on from that instant), :meth:`freeze` it, :meth:`advance` it, or
    pass their own ``now`` callable, which then wins.
    """

    def __init__(self, now=None):
        self._func = now
        self._offset = dt.timedelta(0)
        self._frozen = None
        self._lock = threading.Lock()

    def now(self):
        if self._func is not None:
            value = self._func()
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            return value.astimezone(UTC)
        with self._lock:
            if self._frozen is not None:
                return self._frozen
            return dt.datetime.now(UTC) + self._offset

    def set(self, when):
        "Jump to `when`; the clock keeps running from there."
        when = _aware(when)
        with self._lock:
            self._frozen = None
            self._offset = when - dt.datetime.now(UTC)

    def freeze(self, when=None):
        "Stop the clock at `when` (default: the current simulated time)."
        when = _aware(when) if when is not None else self.now()
        with self._lock:
            self._frozen = when

    def unfreeze(self):
        with self._lock:
            if self._frozen is not None:
                self._offset = self._frozen - dt.datetime.now(UTC)
                self._frozen = None

    def advance(self, seconds):
        "Move the clock forward by `seconds` (a number or a timedelta)."
        if not isinstance(seconds, dt.timedelta):
            seconds = dt.timedelta(seconds=seconds)
        with self._lock:
            if self._frozen is not None:
                self._frozen += seconds
            else:
                self._offset += seconds


def _aware(when):
    if isinstance(when, str):
        when = dt.datetime.fromisoformat(when.replace('Z', '+00:00'))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def iso(when):
    """KSeF's timestamp form: ISO 8601 with offset, e.g.
    ``2025-07-11T12:23:56.015430+00:00``."""
    if when is None:
        return None
    return when.astimezone(UTC).isoformat(timespec='microseconds')


def iso_warsaw(when):
    "Timestamp in Polish time, as UPO documents show them."
    return when.astimezone(WARSAW).isoformat(timespec='milliseconds')


def warsaw_date(when):
    return when.astimezone(WARSAW).date()


def crc8(text):
    "CRC-8 (poly 0x07, init 0) as 2 uppercase hex (PROTOCOL.md §10)."
    c = 0
    for b in text.encode('ascii'):
        c ^= b
        for _ in range(8):
            c = ((c << 1) ^ 0x07) & 0xFF if c & 0x80 else (c << 1) & 0xFF
    return '%02X' % c


def reference_number(infix, now):
    """A 36-character reference number, e.g.
    ``20250625-SO-2C3E6C8000-B675CF5D68-07``.  The two blocks are random,
    the last two characters a CRC-8 of the rest (the real algorithm is not
    published [DOCS SILENT])."""
    body = '%s-%s-%s-%s' % (now.astimezone(WARSAW).strftime('%Y%m%d'),
        infix, os.urandom(5).hex().upper(), os.urandom(5).hex().upper())
    return '%s-%s' % (body, crc8(body))


def ksef_number(nip, on_date):
    """KSeF number for seller `nip` accepted on `on_date` (§10).  Uses
    trytond_ksef.ksef_number.generate when that module is present."""
    try:
        from trytond_ksef import ksef_number as module
    except ImportError:
        module = None
    if module is not None and hasattr(module, 'generate'):
        return module.generate(nip, on_date)
    body = '%s-%s-%s' % (nip, on_date.strftime('%Y%m%d'),
        os.urandom(6).hex().upper())
    return '%s-%s' % (body, crc8(body))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode('ascii')


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + '=' * (-len(text) % 4))


class TokenSigner:
    """Issues and checks the JWTs (HS256) handed to clients.  Clients must
    treat them as opaque; the simulator keeps the authority server-side
    (revocation, expiry) and only uses the signature to refuse forgeries."""

    def __init__(self):
        self._secret = os.urandom(32)

    def issue(self, claims):
        header = b64url(json.dumps(
            {'alg': 'HS256', 'typ': 'JWT'}).encode())
        payload = b64url(json.dumps(claims, separators=(',', ':')).encode())
        signing_input = ('%s.%s' % (header, payload)).encode('ascii')
        signature = hmac.new(self._secret, signing_input,
            hashlib.sha256).digest()
        return '%s.%s.%s' % (header, payload, b64url(signature))

    def check(self, token):
        "Return the claims of a token we issued, or None."
        try:
            header, payload, signature = token.split('.')
            signing_input = ('%s.%s' % (header, payload)).encode('ascii')
            expected = hmac.new(self._secret, signing_input,
                hashlib.sha256).digest()
            if not hmac.compare_digest(expected, b64url_decode(signature)):
                return None
            return json.loads(b64url_decode(payload))
        except (ValueError, UnicodeError):
            return None


@functools.lru_cache(maxsize=None)
def _initial_private_key(slot):
    """RSA-2048 keys are slow to make; the first keys of every simulator in
    a process are made once and shared (tests start many simulators)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class MFKey:
    "One of the simulated Ministry's public-key certificates (§3)."
    usage: str
    private_key: object
    certificate_der: bytes
    valid_from: dt.datetime
    valid_to: dt.datetime
    withdrawn: bool = False

    def __repr__(self):
        return 'MFKey(%s, %s)' % (self.usage, self.public_key_id)

    @property
    def public_key_id(self):
        spki = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo)
        return crypto.sha256_b64(spki)

    @property
    def certificate_id(self):
        return crypto.sha256_b64(self.certificate_der)

    def as_json(self):
        return {
            'certificate': crypto.b64(self.certificate_der),
            'certificateId': self.certificate_id,
            'publicKeyId': self.public_key_id,
            'validFrom': iso(self.valid_from),
            'validTo': iso(self.valid_to),
            'usage': [self.usage],
            }


def make_mf_key(usage, now, private_key=None):
    "A self-signed certificate standing in for MF's (RSA 2048)."
    if private_key is None:
        private_key = rsa.generate_private_key(
            public_exponent=65537, key_size=2048)
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, "Ministerstwo Finansów"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME,
            "KSeF simulator (not the Ministry)"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, usage),
        x509.NameAttribute(NameOID.COUNTRY_NAME, 'PL'),
        ])
    valid_from = (now - dt.timedelta(days=1)).replace(microsecond=0)
    valid_to = valid_from + MF_KEY_VALIDITY
    certificate = (x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from).not_valid_after(valid_to)
        .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False,
                key_encipherment=True, data_encipherment=True,
                key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False), critical=True)
        .sign(private_key, hashes.SHA256()))
    return MFKey(usage, private_key,
        certificate.public_bytes(serialization.Encoding.DER),
        valid_from, valid_to)


def initial_mf_keys(now):
    return [
        make_mf_key('SymmetricKeyEncryption', now, _initial_private_key(0)),
        make_mf_key('KsefTokenEncryption', now, _initial_private_key(1)),
        ]


def status(code, description, details=None, extensions=None):
    value = {'code': code, 'description': description}
    if details:
        value['details'] = list(details)
    if extensions:
        value['extensions'] = dict(extensions)
    return value


@dataclass
class Challenge:
    value: str
    timestamp: dt.datetime
    client_ip: str
    used: bool = False

    @property
    def timestamp_ms(self):
        return int(self.timestamp.timestamp() * 1000)


@dataclass
class AuthOperation:
    "One authentication (`GET /auth/{ref}`, its tokens, its sessions)."
    reference: str
    start: dt.datetime
    category: str                     # XadesSignature | Token
    method: str                       # deprecated authenticationMethod
    method_code: str
    display_name: str
    context: tuple                    # (type, value)
    subject: tuple                    # (Nip|Pesel|Fingerprint, value)
    final_status: dict
    ready_at: float = 0.0             # time.monotonic() of completion
    document_hash: str = None         # SkrotDokumentuUwierzytelniajacego
    document: bytes = None            # the signed request, as received
    ksef_token_reference: str = None  # NumerReferencyjnyTokenaKSeF
    permissions: frozenset = frozenset()
    redeemed: bool = False
    revoked: bool = False
    last_refresh: dt.datetime = None
    refresh_valid_until: dt.datetime = None
    allowed_ips: object = None

    def status(self):
        if time.monotonic() < self.ready_at:
            return status(100, "Uwierzytelnianie w toku")
        if self.revoked:
            return status(425, "Uwierzytelnienie unieważnione", [
                "Uwierzytelnienie i powiązane refresh tokeny zostały "
                "unieważnione przez użytkownika"])
        return self.final_status

    @property
    def succeeded(self):
        return self.status()['code'] == 200


@dataclass
class Token:
    "Server-side record of an issued JWT (never logged)."
    jti: str
    kind: str             # authentication | access | refresh
    auth_reference: str
    expires: dt.datetime
    revoked: bool = False


@dataclass
class KsefToken:
    "A long-lived KSeF token (§4.6).  `secret` is shown to the client once."
    reference: str
    secret: str
    context: tuple
    author: tuple
    permissions: list
    description: str
    created: dt.datetime
    ready_at: float = 0.0
    revoked: bool = False
    last_use: dt.datetime = None

    def __repr__(self):
        return 'KsefToken(%s)' % self.reference

    @property
    def status(self):
        if self.revoked:
            return 'Revoked'
        if time.monotonic() < self.ready_at:
            return 'Pending'
        return 'Active'

    def as_json(self):
        return {
            'referenceNumber': self.reference,
            'authorIdentifier': {
                'type': self.author[0], 'value': self.author[1]},
            'contextIdentifier': {
                'type': self.context[0], 'value': self.context[1]},
            'description': self.description,
            'requestedPermissions': list(self.permissions),
            'dateCreated': iso(self.created),
            'lastUseDate': iso(self.last_use),
            'status': self.status,
            }


@dataclass
class Invoice:
    reference: str
    ordinal: int
    session: 'Session'
    invoice_hash: str
    invoice_size: int
    invoicing_date: dt.datetime
    file_name: str = None
    offline_declared: bool = False
    corrected_hash: str = None
    status: dict = None
    ready_at: float = 0.0
    ksef_number: str = None
    invoice_number: str = None
    seller_nip: str = None
    issue_date: dt.date = None
    kind: str = None                  # RodzajFaktury
    mode: str = None                  # Online | Offline
    acquisition_date: dt.datetime = None
    permanent_storage_date: dt.datetime = None
    content: bytes = field(default=None, repr=False)
    upo: bytes = field(default=None, repr=False)
    corrected_by: str = None          # KSeF number of a technical correction

    @property
    def visible_status(self):
        if time.monotonic() < self.ready_at:
            return status(150, "Trwa przetwarzanie")
        return self.status

    @property
    def final(self):
        return self.visible_status['code'] not in (100, 150)

    @property
    def succeeded(self):
        return self.visible_status['code'] == 200


@dataclass
class BatchPart:
    ordinal: int
    size: int
    hash: str
    data: bytes = field(default=None, repr=False)


@dataclass
class Session:
    reference: str
    kind: str                         # Online | Batch
    auth: AuthOperation
    form_code: dict
    created: dt.datetime
    updated: dt.datetime
    valid_until: dt.datetime
    key: object = field(default=None, repr=False)   # crypto.SymmetricKey
    key_error: bool = False
    offline_mode: bool = False
    code: int = 100
    closed: dt.datetime = None
    ready_at: float = 0.0
    final_status: dict = None
    invoices: list = field(default_factory=list)
    # batch
    file_size: int = None
    file_hash: str = None
    compression: str = 'Zip'
    parts: dict = field(default_factory=dict)
    upload_deadline: dt.datetime = None
    upo_pages: list = field(default_factory=list)   # [(ref, bytes)]

    def visible_status(self):
        if self.final_status is not None:
            if time.monotonic() < self.ready_at:
                if self.kind == 'Batch':
                    return status(150, "Trwa przetwarzanie")
                return status(170, "Sesja interaktywna zamknięta")
            return self.final_status
        if self.key_error:
            return status(415, "Błąd odszyfrowania dostarczonego klucza")
        if self.kind == 'Batch':
            return status(100, "Sesja wsadowa rozpoczęta")
        return status(100, "Sesja interaktywna otwarta")

    @property
    def is_open(self):
        return self.final_status is None and not self.key_error


class Registry:
    """Global KSeF facts: duplicates (seller NIP, RodzajFaktury, P_2) and
    invoices by hash and by KSeF number."""

    def __init__(self):
        self.by_key = {}
        self.by_hash = {}
        self.by_number = {}

    def duplicate_of(self, seller_nip, kind, number):
        return self.by_key.get((seller_nip, kind, number))

    def add_accepted(self, invoice):
        self.by_key[(invoice.seller_nip, invoice.kind,
                invoice.invoice_number)] = invoice
        self.by_number[invoice.ksef_number] = invoice

    def add_processed(self, invoice):
        self.by_hash.setdefault(invoice.invoice_hash, []).append(invoice)
