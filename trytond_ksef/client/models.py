# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Plain objects the KSeF client takes and returns.

Objects holding secrets (tokens, AES keys, pre-signed upload URLs) hide
them from ``repr``/``str``; ``to_dict``/``from_dict`` give JSON-ready dicts
for the caller to persist (encrypted: they do contain the secrets).
"""
import datetime as _dt
import re
from dataclasses import dataclass, field

from .. import crypto

__all__ = [
    'FormCode', 'FA3', 'ContextIdentifier', 'AuthTokens', 'Challenge',
    'AuthOperation', 'StatusInfo', 'AuthStatus', 'PublicKeyCertificate',
    'OnlineSession', 'BatchSession', 'PartUpload', 'SentInvoice',
    'InvoiceStatus', 'SessionStatus', 'UpoPage', 'Upo', 'KSeFStatus',
    'StatusMessage', 'CertificateCredentials', 'TokenCredentials',
    'parse_datetime', 'format_datetime',
    ]

_ISO_DATETIME = re.compile(
    r'^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:[.,](\d+))?'
    r'(Z|z|[+-]\d{2}:?\d{2})?$')


def parse_datetime(value):
    """Parse a KSeF date-time ("2025-07-11T12:23:56.0154302+00:00", with up
    to 7 fraction digits, or "...Z") into an aware UTC datetime; None
    stays None.  A value without an offset is taken as UTC.  Raises
    ValueError on anything else."""
    if value is None or value == '':
        return None
    if isinstance(value, _dt.datetime):
        result = value
    else:
        match = _ISO_DATETIME.match(str(value).strip())
        if not match:
            raise ValueError("not an ISO 8601 date-time: %r" % (value,))
        date, time, fraction, offset = match.groups()
        # fromisoformat of Python < 3.11 takes 6 fraction digits at most.
        fraction = (fraction or '')[:6].ljust(6, '0')
        if not offset or offset in ('Z', 'z'):
            offset = '+00:00'
        elif ':' not in offset:
            offset = offset[:3] + ':' + offset[3:]
        result = _dt.datetime.fromisoformat(
            '%sT%s.%s%s' % (date, time, fraction, offset))
    if result.tzinfo is None:
        result = result.replace(tzinfo=_dt.timezone.utc)
    return result.astimezone(_dt.timezone.utc)


def format_datetime(value):
    "ISO 8601 text of an aware datetime (None stays None)."
    if value is None:
        return None
    return value.astimezone(_dt.timezone.utc).isoformat()


def _status_details(details):
    return tuple(str(d) for d in (details or ()))


@dataclass(frozen=True)
class FormCode:
    "Invoice schema of a session (``formCode``)."
    system_code: str
    schema_version: str
    value: str

    def to_json(self):
        return {
            'systemCode': self.system_code,
            'schemaVersion': self.schema_version,
            'value': self.value,
            }

    @classmethod
    def from_json(cls, data):
        return cls(data['systemCode'], data['schemaVersion'], data['value'])


# Note the space in 'FA (3)' (PROTOCOL.md §7).
FA3 = FormCode('FA (3)', '1-0E', 'FA')


@dataclass(frozen=True)
class ContextIdentifier:
    """On whose behalf one works: ``type`` is 'Nip', 'InternalId',
    'NipVatUe' or 'PeppolId'."""
    type: str
    value: str

    TYPES = ('Nip', 'InternalId', 'NipVatUe', 'PeppolId')

    @classmethod
    def nip(cls, nip):
        return cls('Nip', str(nip))

    def to_json(self):
        return {'type': self.type, 'value': self.value}


@dataclass
class AuthTokens:
    """The access and refresh tokens of one authentication, with their
    validity.  Persist it with `to_dict` (it holds secrets) and give it back
    to a new client to reuse the authentication."""
    access_token: str = field(repr=False)
    access_valid_until: _dt.datetime
    refresh_token: str = field(repr=False)
    refresh_valid_until: _dt.datetime
    #: Reference number of the authentication operation (not secret).
    reference_number: str = None
    #: The context the tokens were issued for, when known.
    context: ContextIdentifier = None

    def __str__(self):
        return repr(self)

    def access_usable(self, now, margin=0):
        return (bool(self.access_token) and self.access_valid_until
            and self.access_valid_until - _dt.timedelta(seconds=margin)
            > now)

    def refresh_usable(self, now, margin=0):
        return (bool(self.refresh_token) and self.refresh_valid_until
            and self.refresh_valid_until - _dt.timedelta(seconds=margin)
            > now)

    def to_dict(self):
        return {
            'access_token': self.access_token,
            'access_valid_until': format_datetime(self.access_valid_until),
            'refresh_token': self.refresh_token,
            'refresh_valid_until': format_datetime(self.refresh_valid_until),
            'reference_number': self.reference_number,
            'context': (self.context.to_json() if self.context else None),
            }

    @classmethod
    def from_dict(cls, data):
        context = data.get('context')
        return cls(
            access_token=data['access_token'],
            access_valid_until=parse_datetime(data['access_valid_until']),
            refresh_token=data['refresh_token'],
            refresh_valid_until=parse_datetime(data['refresh_valid_until']),
            reference_number=data.get('reference_number'),
            context=(ContextIdentifier(context['type'], context['value'])
                if context else None))


@dataclass(frozen=True)
class CertificateCredentials:
    """Authenticate with a XAdES signature: certificate (DER) and private
    key of a KSeF Authentication certificate, a qualified seal/signature,
    or (TEST only) a self-signed one."""
    context: ContextIdentifier
    certificate_der: bytes = field(repr=False)
    private_key: object = field(repr=False)
    subject_identifier_type: str = 'certificateSubject'
    verify_certificate_chain: bool = None


@dataclass(frozen=True)
class TokenCredentials:
    "Authenticate with a KSeF token (PROTOCOL.md §4.3)."
    context: ContextIdentifier
    ksef_token: str = field(repr=False)


@dataclass(frozen=True)
class Challenge:
    challenge: str
    timestamp: _dt.datetime
    timestamp_ms: int
    client_ip: str = None


@dataclass(frozen=True)
class AuthOperation:
    "A started authentication: its reference and operation token."
    reference_number: str
    authentication_token: str = field(repr=False)
    valid_until: _dt.datetime = None


@dataclass(frozen=True)
class StatusInfo:
    code: int
    description: str = ''
    details: tuple = ()
    extensions: dict = None

    @classmethod
    def from_json(cls, data):
        data = data or {}
        code = data.get('code')
        return cls(
            code=int(code) if code is not None else None,
            description=data.get('description') or '',
            details=_status_details(data.get('details')),
            extensions=dict(data.get('extensions') or {}) or None)


@dataclass(frozen=True)
class AuthStatus:
    "Status of an authentication operation (GET /auth/{ref})."
    status: StatusInfo
    start_date: _dt.datetime = None
    method_category: str = None
    method_code: str = None
    is_token_redeemed: bool = None
    refresh_token_valid_until: _dt.datetime = None

    IN_PROGRESS = 100
    SUCCESS = 200

    @property
    def code(self):
        return self.status.code

    @property
    def is_final(self):
        return self.status.code != self.IN_PROGRESS

    @classmethod
    def from_json(cls, data):
        info = data.get('authenticationMethodInfo') or {}
        return cls(
            status=StatusInfo.from_json(data.get('status')),
            start_date=parse_datetime(data.get('startDate')),
            method_category=info.get('category'),
            method_code=info.get('code'),
            is_token_redeemed=data.get('isTokenRedeemed'),
            refresh_token_valid_until=parse_datetime(
                data.get('refreshTokenValidUntil')))


@dataclass(frozen=True)
class PublicKeyCertificate:
    "One Ministry of Finance encryption certificate (PROTOCOL.md §3)."
    certificate: bytes = field(repr=False)
    certificate_id: str
    public_key_id: str
    valid_from: _dt.datetime
    valid_to: _dt.datetime
    usage: tuple

    KSEF_TOKEN_ENCRYPTION = 'KsefTokenEncryption'
    SYMMETRIC_KEY_ENCRYPTION = 'SymmetricKeyEncryption'

    @classmethod
    def from_json(cls, data):
        return cls(
            certificate=crypto.b64decode(data['certificate']),
            certificate_id=data.get('certificateId'),
            public_key_id=data.get('publicKeyId'),
            valid_from=parse_datetime(data['validFrom']),
            valid_to=parse_datetime(data['validTo']),
            usage=tuple(data.get('usage') or ()))

    def valid_at(self, now):
        return self.valid_from <= now < self.valid_to

    def public_key(self):
        """The RSA public key: from the X.509 certificate, or from a bare
        SubjectPublicKeyInfo (as the open-api example of
        KsefTokenEncryption shows)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        try:
            return x509.load_der_x509_certificate(
                self.certificate).public_key()
        except ValueError:
            return serialization.load_der_public_key(self.certificate)


@dataclass
class OnlineSession:
    """An open interactive session.  `key` (AES key and IV) is secret: it
    is hidden from repr, and `to_dict` must be stored encrypted."""
    reference_number: str
    valid_until: _dt.datetime
    key: crypto.SymmetricKey = field(repr=False)
    form_code: FormCode = FA3
    public_key_id: str = None

    kind = 'online'

    def __str__(self):
        return repr(self)

    def to_dict(self):
        return {
            'kind': self.kind,
            'reference_number': self.reference_number,
            'valid_until': format_datetime(self.valid_until),
            'key': crypto.b64(self.key.key),
            'iv': crypto.b64(self.key.iv),
            'form_code': self.form_code.to_json(),
            'public_key_id': self.public_key_id,
            }

    @classmethod
    def from_dict(cls, data):
        return cls(
            reference_number=data['reference_number'],
            valid_until=parse_datetime(data.get('valid_until')),
            key=crypto.SymmetricKey(crypto.b64decode(data['key']),
                crypto.b64decode(data['iv'])),
            form_code=FormCode.from_json(data['form_code']),
            public_key_id=data.get('public_key_id'))


@dataclass(frozen=True)
class PartUpload:
    """Where and how to upload one batch part.  The URL is pre-signed (its
    query is a credential): hidden from repr."""
    ordinal_number: int
    method: str
    url: str = field(repr=False)
    headers: dict = field(default_factory=dict)

    def to_dict(self):
        return {'ordinal_number': self.ordinal_number,
            'method': self.method, 'url': self.url,
            'headers': dict(self.headers)}

    @classmethod
    def from_dict(cls, data):
        return cls(data['ordinal_number'], data['method'], data['url'],
            dict(data.get('headers') or {}))


@dataclass
class BatchSession:
    "An opened batch session (secrets hidden from repr)."
    reference_number: str
    key: crypto.SymmetricKey = field(repr=False)
    part_uploads: tuple = field(default=(), repr=False)
    form_code: FormCode = FA3
    offline_mode: bool = False
    public_key_id: str = None

    kind = 'batch'

    def __str__(self):
        return repr(self)

    def to_dict(self):
        return {
            'kind': self.kind,
            'reference_number': self.reference_number,
            'key': crypto.b64(self.key.key),
            'iv': crypto.b64(self.key.iv),
            'part_uploads': [p.to_dict() for p in self.part_uploads],
            'form_code': self.form_code.to_json(),
            'offline_mode': self.offline_mode,
            'public_key_id': self.public_key_id,
            }

    @classmethod
    def from_dict(cls, data):
        return cls(
            reference_number=data['reference_number'],
            key=crypto.SymmetricKey(crypto.b64decode(data['key']),
                crypto.b64decode(data['iv'])),
            part_uploads=tuple(PartUpload.from_dict(p)
                for p in data.get('part_uploads') or ()),
            form_code=FormCode.from_json(data['form_code']),
            offline_mode=bool(data.get('offline_mode')),
            public_key_id=data.get('public_key_id'))


@dataclass(frozen=True)
class SentInvoice:
    """What was sent: KSeF's invoice reference and the hash/size of the
    exact bytes (the invoice's identity for QR codes and corrections)."""
    reference_number: str
    session_reference_number: str
    invoice_hash: str
    invoice_size: int
    encrypted_invoice_hash: str
    encrypted_invoice_size: int
    offline_mode: bool = False
    hash_of_corrected_invoice: str = None


class _StatusCode:
    """What a KSeF status code says, for classes with a `status` and their
    own IN_PROGRESS codes and SUCCESS code."""
    IN_PROGRESS = ()
    SUCCESS = 200

    @property
    def code(self):
        return self.status.code

    @property
    def is_final(self):
        return self.status.code not in self.IN_PROGRESS

    @property
    def is_success(self):
        return self.status.code == self.SUCCESS


@dataclass(frozen=True)
class InvoiceStatus(_StatusCode):
    "Status of one invoice of a session (PROTOCOL.md §8)."
    reference_number: str
    status: StatusInfo
    ordinal_number: int = None
    invoice_number: str = None
    ksef_number: str = None
    invoice_hash: str = None
    invoice_file_name: str = None
    acquisition_date: _dt.datetime = None
    invoicing_date: _dt.datetime = None
    permanent_storage_date: _dt.datetime = None
    upo_download_url: str = field(default=None, repr=False)
    upo_download_url_expiration: _dt.datetime = None
    invoicing_mode: str = None

    IN_PROGRESS = (100, 150)
    SUCCESS = 200
    DUPLICATE = 440
    CANCELLED_BY_SYSTEM = 550

    @property
    def original_ksef_number(self):
        "For a duplicate (440): the KSeF number already given."
        return (self.status.extensions or {}).get('originalKsefNumber')

    @property
    def original_session_reference_number(self):
        return (self.status.extensions or {}).get(
            'originalSessionReferenceNumber')

    def error(self):
        """The typed error for a final failure status, or None (success or
        still in progress).  The caller decides whether to raise it."""
        from ..errors import DuplicateInvoice, InvoiceRejected
        if not self.is_final or self.is_success:
            return None
        params = dict(
            invoice_reference=self.reference_number,
            status_code=self.status.code,
            description=self.status.description,
            details='; '.join(self.status.details),
            invoice_number=self.invoice_number)
        if self.status.code == self.DUPLICATE:
            return DuplicateInvoice(
                original_ksef_number=self.original_ksef_number,
                original_session=self.original_session_reference_number,
                **params)
        return InvoiceRejected(**params)

    @classmethod
    def from_json(cls, data):
        return cls(
            reference_number=data.get('referenceNumber'),
            status=StatusInfo.from_json(data.get('status')),
            ordinal_number=data.get('ordinalNumber'),
            invoice_number=data.get('invoiceNumber'),
            ksef_number=data.get('ksefNumber'),
            invoice_hash=data.get('invoiceHash'),
            invoice_file_name=data.get('invoiceFileName'),
            acquisition_date=parse_datetime(data.get('acquisitionDate')),
            invoicing_date=parse_datetime(data.get('invoicingDate')),
            permanent_storage_date=parse_datetime(
                data.get('permanentStorageDate')),
            upo_download_url=data.get('upoDownloadUrl'),
            upo_download_url_expiration=parse_datetime(
                data.get('upoDownloadUrlExpirationDate')),
            invoicing_mode=data.get('invoicingMode'))


@dataclass(frozen=True)
class UpoPage:
    reference_number: str
    download_url: str = field(repr=False)
    download_url_expiration: _dt.datetime = None


@dataclass(frozen=True)
class SessionStatus(_StatusCode):
    "Status of a session (GET /sessions/{ref}, PROTOCOL.md §8)."
    reference_number: str
    status: StatusInfo
    date_created: _dt.datetime = None
    date_updated: _dt.datetime = None
    valid_until: _dt.datetime = None
    upo_pages: tuple = ()
    invoice_count: int = None
    successful_invoice_count: int = None
    failed_invoice_count: int = None

    # 100 open/started, 150 batch processing, 170 online closed and
    # awaiting processing; everything else is final.
    IN_PROGRESS = (100, 150, 170)
    OPEN = 100
    SUCCESS = 200

    def error(self):
        "The typed error of a failed final status, or None."
        from ..errors import SessionFailed
        if not self.is_final or self.is_success:
            return None
        return SessionFailed(
            session=self.reference_number,
            status_code=self.status.code,
            description=self.status.description,
            details='; '.join(self.status.details))

    @classmethod
    def from_json(cls, reference_number, data):
        upo = data.get('upo') or {}
        return cls(
            reference_number=reference_number,
            status=StatusInfo.from_json(data.get('status')),
            date_created=parse_datetime(data.get('dateCreated')),
            date_updated=parse_datetime(data.get('dateUpdated')),
            valid_until=parse_datetime(data.get('validUntil')),
            upo_pages=tuple(
                UpoPage(p.get('referenceNumber'), p.get('downloadUrl'),
                    parse_datetime(p.get('downloadUrlExpirationDate')))
                for p in upo.get('pages') or ()),
            invoice_count=data.get('invoiceCount'),
            successful_invoice_count=data.get('successfulInvoiceCount'),
            failed_invoice_count=data.get('failedInvoiceCount'))


@dataclass(frozen=True)
class Upo:
    """An UPO document (XML bytes as received) and its SHA-256 (Base64).
    `reference` names it: the UPO page reference, the invoice reference or
    the KSeF number it was asked for."""
    content: bytes = field(repr=False)
    sha256: str
    reference: str = None


@dataclass(frozen=True)
class StatusMessage:
    "One message of the KSeF status service (Latarnia, PROTOCOL.md §21)."
    id: str
    event_id: int = None
    category: str = None
    type: str = None
    title: str = ''
    text: str = ''
    start: _dt.datetime = None
    end: _dt.datetime = None
    version: int = None
    published: _dt.datetime = None

    FAILURE = 'FAILURE'
    TOTAL_FAILURE = 'TOTAL_FAILURE'
    MAINTENANCE = 'MAINTENANCE'

    @classmethod
    def from_json(cls, data):
        event_id = data.get('eventId')
        version = data.get('version')
        return cls(
            id=str(data.get('id')) if data.get('id') is not None else None,
            event_id=int(event_id) if event_id is not None else None,
            category=data.get('category'),
            type=data.get('type'),
            title=data.get('title') or '',
            text=data.get('text') or '',
            start=parse_datetime(data.get('start')),
            end=parse_datetime(data.get('end')),
            version=int(version) if version is not None else None,
            published=parse_datetime(data.get('published')))


@dataclass(frozen=True)
class KSeFStatus:
    """Current state of KSeF: 'AVAILABLE', 'MAINTENANCE', 'FAILURE' or
    'TOTAL_FAILURE' (an unknown value is kept as received)."""
    state: str
    messages: tuple = ()

    AVAILABLE = 'AVAILABLE'
    MAINTENANCE = 'MAINTENANCE'
    FAILURE = 'FAILURE'
    TOTAL_FAILURE = 'TOTAL_FAILURE'

    @property
    def is_available(self):
        return self.state == self.AVAILABLE
