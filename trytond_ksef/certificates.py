# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""KSeF certificates: loading, classification and checks (PROTOCOL.md §4, §5).

`inspect()` is THE shared entry point: the Tryton upload and the
``trytond-ksef inspect-certificate`` command both call it, so a certificate
is judged the same way everywhere.

Certificates issued by KSeF's own CA carry a NULL parameter in their
``ecdsa-with-SHA512`` signatureAlgorithm.  That is invalid DER (RFC 5758
says the parameters MUST be absent) and current `cryptography` refuses to
parse it.  We keep the ORIGINAL bytes (`KSeFCertificate.der`: what gets
embedded in signatures and hashed for the fingerprint) and read the fields
from a normalised copy without the NULL parameters.

ASN.1 work (that normalisation and reading PKCS#12 files that hold such a
certificate) uses `asn1crypto`: a small pure-Python library without
dependencies whose parser preserves the original encoding of every value it
does not modify, so removing one parameter re-encodes only the enclosing
lengths.  A hand-written DER walker would do for the certificate, but
PKCS#12 files are often BER (indefinite lengths, chunked strings), which
asn1crypto already handles.
"""
import base64
import binascii
import functools
import hashlib
import hmac
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from asn1crypto import core as asn1_core
from asn1crypto import pkcs12 as asn1_pkcs12
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import (
    dsa,
    ec,
    ed448,
    ed25519,
    rsa,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtensionOID, NameOID

__all__ = [
    'AUTHENTICATION', 'OFFLINE', 'PURPOSES', 'CertificateError',
    'CertificateWarning', 'SubjectIdentifier', 'KSeFCertificate',
    'Inspection', 'load_certificate', 'load_private_key', 'load_pkcs12',
    'check', 'inspect', 'configure_parser', 'run']

AUTHENTICATION = 'authentication'
OFFLINE = 'offline'
PURPOSES = (AUTHENTICATION, OFFLINE)

MIN_RSA_BITS = 2048
# Key derivation rounds accepted in a PKCS#12 file read by the fallback: a
# hostile upload must not keep a worker busy for minutes (tools write 2048
# to 600000).
MAX_ITERATIONS = 2000000
# Warn this long before the end of validity (KSeF certificates last about
# two years; a month leaves time to enrol a new one).
EXPIRY_WARNING = timedelta(days=30)

_MESSAGES = {
    'unreadable_certificate': (
        "The certificate cannot be read: expected an X.509 certificate "
        "(PEM or DER) or a PKCS#12 file."),
    'unreadable_key': (
        "The private key cannot be read: expected PKCS#8, PKCS#1 or SEC1 "
        "in PEM or DER form (a PKCS#12 file must contain a key)."),
    'unsupported_pkcs12': (
        "The PKCS#12 file is protected with a legacy cipher (RC2-40) that "
        "cannot be read together with a KSeF-issued certificate: export it "
        "again with AES (the OpenSSL 3 default) or upload the certificate "
        "and the key as separate files."),
    'wrong_password': (
        "The password does not open the private key (or the key is "
        "encrypted and no password was given)."),
    'key_mismatch': "The private key does not belong to the certificate.",
    'purpose_mismatch': (
        "The certificate's key usage allows {found} use, but a "
        "certificate for {expected} is required."),
    'not_yet_valid': "The certificate is not valid before {not_before}.",
    'expired': "The certificate expired on {not_after}.",
    'weak_key': (
        "The certificate's key ({key_type}) is too weak: KSeF requires "
        "at least {minimum}."),
    'unsupported_key': (
        "The certificate's key ({key_type}) is not accepted: KSeF uses "
        "RSA (2048 bits or more) or EC P-256 keys."),
    }

_WARNINGS = {
    'nip_mismatch': (
        "The certificate identifies NIP {certificate_nip}, not the "
        "company's NIP {nip}: it works only if its holder has permissions "
        "in the company's context."),
    'expires_soon': "The certificate expires on {not_after} ({days} days).",
    }


class CertificateError(Exception):
    """A certificate, key or password that cannot be used.

    `code` is stable (the Tryton layer shows message ``ksef.msg_<code>``),
    `params` fills the message; str() is the English text for the CLI.
    No key material nor password ever goes in here.  `certificate` is the
    KSeFCertificate concerned when it could be loaded (set by `inspect`).
    """

    def __init__(self, code, **params):
        self.code = code
        self.params = params
        self.certificate = None
        super().__init__(_MESSAGES[code].format(**params))


@dataclass(frozen=True)
class CertificateWarning:
    "Something to tell the user that does not prevent using a certificate."
    code: str
    params: dict = field(default_factory=dict)

    def __str__(self):
        return _WARNINGS[self.code].format(**self.params)


@dataclass(frozen=True)
class SubjectIdentifier:
    """Who KSeF sees in the certificate (PROTOCOL.md §4.2).

    `type` uses KSeF's spelling: 'Nip', 'Pesel' or 'Fingerprint'.
    """
    type: str
    value: str

    @property
    def auth_type(self):
        "The `SubjectIdentifierType` of an AuthTokenRequest."
        if self.type == 'Fingerprint':
            return 'certificateFingerprint'
        return 'certificateSubject'

    def __str__(self):
        return '%s %s' % (self.type, self.value)


@dataclass(frozen=True)
class KSeFCertificate:
    """A loaded certificate and what KSeF will make of it.

    `der` holds the original bytes, never a re-encoded copy.  `purpose` is
    'authentication', 'offline' or None (see `_purpose`).
    """
    der: bytes = field(repr=False)
    subject: str
    issuer: str
    identifier: SubjectIdentifier
    serial_number: int
    serial_hex: str
    fingerprint: str
    key_type: str
    not_before: datetime
    not_after: datetime
    key_usage: frozenset
    qualified: bool
    purpose: str
    public_key: object = field(repr=False, compare=False)
    # True when the fields were read from a normalised copy (KSeF CA).
    normalised: bool = False

    @property
    def pem(self):
        "The original certificate in PEM."
        return _pem(self.der)

    @property
    def nip(self):
        "The NIP KSeF reads from the subject, or None."
        if self.identifier.type == 'Nip':
            return self.identifier.value
        return None

    def matches(self, key):
        "Whether private `key` belongs to this certificate."
        return _spki(key.public_key()) == _spki(self.public_key)


@dataclass(frozen=True)
class Inspection:
    "What `inspect` found: a usable certificate, its key and warnings."
    certificate: KSeFCertificate
    key: object = field(repr=False)
    warnings: tuple = ()


# --- certificates ----------------------------------------------------------

_PEM_RE = re.compile(
    rb'-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)\s*-----END \1-----', re.S)
_CERT_LABELS = {b'CERTIFICATE', b'X509 CERTIFICATE', b'TRUSTED CERTIFICATE'}
_B64_RE = re.compile(rb'^[A-Za-z0-9+/=\s]+$')

# Signature algorithms whose AlgorithmIdentifier parameters MUST be absent
# (RFC 5758 §3.2 ECDSA and DSA, RFC 8410 EdDSA, NIST SHA-3 ECDSA).
_ABSENT_PARAMETERS = {
    '1.2.840.10045.4.1',  # ecdsa-with-SHA1
    '1.2.840.10045.4.3.1', '1.2.840.10045.4.3.2',
    '1.2.840.10045.4.3.3', '1.2.840.10045.4.3.4',  # ecdsa-with-SHA2
    '2.16.840.1.101.3.4.3.9', '2.16.840.1.101.3.4.3.10',
    '2.16.840.1.101.3.4.3.11', '2.16.840.1.101.3.4.3.12',  # ecdsa-sha3
    '2.16.840.1.101.3.4.3.1', '2.16.840.1.101.3.4.3.2',  # dsa-with-sha2
    '1.3.101.112', '1.3.101.113',  # Ed25519, Ed448
    }
_NULL = b'\x05\x00'

# RFC 4514 names for attributes KSeF relies on (cryptography prints the
# dotted OID of those RFC 4514 does not list).
_NAMES = {
    NameOID.ORGANIZATION_IDENTIFIER: 'organizationIdentifier',
    NameOID.SERIAL_NUMBER: 'serialNumber',
    NameOID.GIVEN_NAME: 'givenName',
    NameOID.SURNAME: 'surname',
    NameOID.TITLE: 'title',
    NameOID.X500_UNIQUE_IDENTIFIER: 'x500UniqueIdentifier',
    NameOID.EMAIL_ADDRESS: 'emailAddress',
    }

# PROTOCOL.md §4.2: how KSeF reads the subject of a certificate.
_PESEL_RE = re.compile(r'(PNOPL|PESEL).*?(\d{11})')
_NIP_RE = re.compile(r'(TINPL|NIP).*?(\d{10})')
_VAT_RE = re.compile(r'(VATPL).*?(\d{10})')

_QC_STATEMENTS = '1.3.6.1.5.5.7.1.3'
_QC_COMPLIANCE = '0.4.0.1862.1.1'

_CURVES = {
    'secp256r1': 'P-256', 'secp384r1': 'P-384', 'secp521r1': 'P-521'}

# What cryptography raises on a malformed certificate: besides ValueError,
# exceptions that derive from Exception only (found by fuzzing uploads).
_X509_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm,
    x509.InvalidVersion, x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType)
# asn1crypto parses lazily and, on hostile input, fails with any of these
# (an AttributeError when a CHOICE holds an unexpected alternative...).
_ASN1_ERRORS = (ValueError, TypeError, KeyError, AttributeError,
    IndexError, OverflowError)


class _QcStatement(asn1_core.Sequence):
    _fields = [
        ('statement_id', asn1_core.ObjectIdentifier),
        ('statement_info', asn1_core.Any, {'optional': True}),
        ]


class _QcStatements(asn1_core.SequenceOf):
    _child_spec = _QcStatement


def _pem(der):
    body = base64.encodebytes(der).decode('ascii')
    return ('-----BEGIN CERTIFICATE-----\n%s-----END CERTIFICATE-----\n'
        % body)


def _b64decode(text):
    try:
        return base64.b64decode(b''.join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def _spki(public_key):
    return public_key.public_bytes(
        serialization.Encoding.DER,
        serialization.PublicFormat.SubjectPublicKeyInfo)


def _certificate_der(data):
    """The DER bytes of the (first) certificate in `data`.

    Accepts PEM, DER and the bare Base64 of a DER certificate (what KSeF's
    /certificates/retrieve returns, often saved as is to a .cer file).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("certificate data must be bytes")
    data = bytes(data)
    if b'-----BEGIN' in data:
        for match in _PEM_RE.finditer(data):
            if match.group(1) in _CERT_LABELS:
                der = _b64decode(match.group(2))
                if der:
                    return der
                break
        raise CertificateError('unreadable_certificate')
    if data[:1] == b'\x30':
        return data
    if _B64_RE.match(data):
        der = _b64decode(data)
        if der and der[:1] == b'\x30':
            return der
    raise CertificateError('unreadable_certificate')


def _normalise(der):
    """A copy of `der` without NULL parameters where they must be absent.

    Only the outer signatureAlgorithm and tbsCertificate.signature are
    touched; asn1crypto keeps every other value's original encoding and
    recomputes the enclosing lengths.  The copy's signature no longer
    verifies (its TBS changed): it is used to read fields, nothing else.
    Returns None when nothing needed a change.
    """
    try:
        cert = asn1_x509.Certificate.load(der, strict=True)
        changed = False
        for algorithm in (cert['signature_algorithm'],
                cert['tbs_certificate']['signature']):
            if (algorithm['algorithm'].dotted in _ABSENT_PARAMETERS
                    and algorithm['parameters'].dump() == _NULL):
                algorithm['parameters'] = None
                changed = True
        if not changed:
            return None
        return cert.dump()
    except _ASN1_ERRORS:
        return None


def _parse(der):
    """(cryptography certificate, normalised?) for `der`.

    The normalised copy is used whenever there is a NULL to remove, even
    with a cryptography version that would still accept (and warn about)
    the original: the result does not depend on the library's version.
    """
    fixed = _normalise(der)
    try:
        if fixed is not None:
            return x509.load_der_x509_certificate(fixed), True
        return x509.load_der_x509_certificate(der), False
    except _X509_ERRORS:
        raise CertificateError('unreadable_certificate') from None



def parse_x509(der):
    """The `cryptography` certificate of `der`, also for KSeF-issued ones.

    Read from the normalised copy when KSeF's CA wrote a NULL parameter
    (see `_normalise`): use it to read fields and the public key, never to
    embed or hash.  Raises CertificateError('unreadable_certificate').
    """
    return _parse(der)[0]

def _key_type(public_key):
    if isinstance(public_key, rsa.RSAPublicKey):
        return 'RSA %d' % public_key.key_size
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        name = public_key.curve.name
        return 'EC %s' % _CURVES.get(name, name)
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return 'Ed25519'
    if isinstance(public_key, ed448.Ed448PublicKey):
        return 'Ed448'
    if isinstance(public_key, dsa.DSAPublicKey):
        return 'DSA %d' % public_key.key_size
    return type(public_key).__name__


def _first(name, oid):
    attributes = name.get_attributes_for_oid(oid)
    if attributes and isinstance(attributes[0].value, str):
        return attributes[0].value
    return None


def _identifier(cert, fingerprint):
    "Subject identifier as KSeF reads it (PROTOCOL.md §4.2)."
    subject = cert.subject
    organization = _first(subject, NameOID.ORGANIZATION_IDENTIFIER)
    if organization:
        match = _VAT_RE.search(organization)
        if match:
            return SubjectIdentifier('Nip', match.group(2))
    serial = _first(subject, NameOID.SERIAL_NUMBER)
    if serial:
        match = _PESEL_RE.search(serial)
        if match:
            return SubjectIdentifier('Pesel', match.group(2))
        match = _NIP_RE.search(serial)
        if match:
            return SubjectIdentifier('Nip', match.group(2))
    return SubjectIdentifier('Fingerprint', fingerprint)


def _key_usage(cert):
    "Names of the keyUsage bits set, or None without the extension."
    try:
        usage = cert.extensions.get_extension_for_oid(
            ExtensionOID.KEY_USAGE).value
    except x509.ExtensionNotFound:
        return None
    names = {
        'digital_signature', 'content_commitment', 'key_encipherment',
        'data_encipherment', 'key_agreement', 'key_cert_sign', 'crl_sign'}
    found = {n for n in names if getattr(usage, n)}
    if usage.key_agreement:
        if usage.encipher_only:
            found.add('encipher_only')
        if usage.decipher_only:
            found.add('decipher_only')
    return frozenset(found)


def _qualified(cert):
    "Whether the certificate declares itself EU-qualified (QcCompliance)."
    for extension in cert.extensions:
        if extension.oid.dotted_string != _QC_STATEMENTS:
            continue
        try:
            statements = _QcStatements.load(extension.value.value)
            return any(s['statement_id'].dotted == _QC_COMPLIANCE
                for s in statements)
        except (ValueError, TypeError, AttributeError):
            return False
    return False


def _purpose(key_usage, qualified):
    """What the certificate is for in KSeF (PROTOCOL.md §5).

    KSeF issues two exclusive types: Authentication with keyUsage
    digitalSignature only and Offline with nonRepudiation only.  Other
    certificates KSeF accepts for authentication (qualified signatures and
    seals, test self-signed ones) may differ, hence:

    * digitalSignature set (with or without nonRepudiation), or no keyUsage
      extension at all (RFC 5280: any use): 'authentication';
    * an EU-qualified certificate (QcCompliance statement) with
      nonRepudiation only, as qualified signature certificates usually
      are: 'authentication' too, as KSeF accepts it for that and it can
      never sign CODE II (it is not a KSeF certificate);
    * nonRepudiation only, not qualified: 'offline';
    * anything else (neither bit, e.g. key encipherment only): None, i.e.
      usable for neither.
    """
    if key_usage is None or 'digital_signature' in key_usage:
        return AUTHENTICATION
    if 'content_commitment' in key_usage:
        return AUTHENTICATION if qualified else OFFLINE
    return None


def _serial_hex(serial_number):
    """The serial as CODE II writes it: uppercase hex, at least 16 digits.

    KSeF serials are 64-bit and written with their leading zeros
    (`01F20A5D352AE590`, PROTOCOL.md §5 and §14); longer serials of other
    CAs keep all their digits, padded to whole bytes.
    """
    digits = '%X' % serial_number
    width = max(16, len(digits) + len(digits) % 2)
    return digits.rjust(width, '0')


def load_certificate(data):
    "Load a certificate (PEM, DER or Base64 DER) into a KSeFCertificate."
    der = _certificate_der(data)
    cert, normalised = _parse(der)
    fingerprint = hashlib.sha256(der).hexdigest().upper()
    try:
        # cryptography parses extensions and the key lazily: a malformed
        # one surfaces only here.
        public_key = cert.public_key()
        key_usage = _key_usage(cert)
        qualified = _qualified(cert)
        return KSeFCertificate(
            der=der,
            subject=cert.subject.rfc4514_string(_NAMES),
            issuer=cert.issuer.rfc4514_string(_NAMES),
            identifier=_identifier(cert, fingerprint),
            serial_number=cert.serial_number,
            serial_hex=_serial_hex(cert.serial_number),
            fingerprint=fingerprint,
            key_type=_key_type(public_key),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            key_usage=key_usage,
            qualified=qualified,
            purpose=_purpose(key_usage, qualified),
            public_key=public_key,
            normalised=normalised,
            )
    except _X509_ERRORS:
        raise CertificateError('unreadable_certificate') from None


# --- private keys ----------------------------------------------------------

def _password_bytes(password):
    # An empty password stays empty (not None): PKCS#12 tools write files
    # encrypted with the empty password.
    if password is None or isinstance(password, bytes):
        return password
    if isinstance(password, str):
        return password.encode('utf-8')
    raise TypeError("password must be bytes, str or None")


def load_private_key(data, password=None, checked=False):
    """Load a private key: PKCS#8 (plain or encrypted), PKCS#1 or SEC1
    (traditional, also encrypted PEM), in PEM, DER or bare Base64 DER.

    Returns a `cryptography` private key object (use it to sign).  A
    password given for a key that is not encrypted is ignored.
    `checked=True` is for a key this package already loaded and checked
    (a stored key): the RSA consistency check, a tenth of a second for
    each load, is not repeated.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("key data must be bytes")
    data = bytes(data)
    password = _password_bytes(password)
    if b'-----BEGIN' in data:
        loader = serialization.load_pem_private_key
    else:
        loader = serialization.load_der_private_key
        if data[:1] != b'\x30' and _B64_RE.match(data):
            data = _b64decode(data) or data
    if checked:
        loader = functools.partial(loader,
            unsafe_skip_rsa_key_validation=True)
    try:
        return loader(data, None)
    except TypeError:
        # Encrypted ("Password was not given but private key is
        # encrypted"): go on with the password below.
        pass
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateError('unreadable_key') from None
    if password is None:
        raise CertificateError('wrong_password')
    try:
        return loader(data, password)
    except (ValueError, TypeError):
        # cryptography cannot tell a wrong password from a damaged
        # encrypted key; the wrong password is by far the likelier.
        raise CertificateError('wrong_password') from None
    except UnsupportedAlgorithm:
        raise CertificateError('unreadable_key') from None


# --- PKCS#12 ---------------------------------------------------------------

def load_pkcs12(data, password=None):
    """(KSeFCertificate, private key) from a PKCS#12 (.p12/.pfx) file.

    The certificate returned is the one matching the key (the others are
    usually its CA chain); if none matches, the first one, which `check`
    then reports as 'key_mismatch'.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("PKCS#12 data must be bytes")
    data = bytes(data)
    password = _password_bytes(password)
    if password and b'\x00' in password:
        # A PKCS#12 password is a NUL-terminated string: one with a NUL
        # cannot be right (and cryptography panics on it).
        raise CertificateError('wrong_password')
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password)
    except (ValueError, x509.InvalidVersion, x509.DuplicateExtension,
            x509.UnsupportedGeneralNameType):
        # Either not PKCS#12 / wrong password, or a certificate that
        # cryptography refuses (KSeF CA): the fallback tells which.
        key_der, certs = _pkcs12_fallback(data, password)
        key = load_private_key(key_der)
        if not certs:
            raise CertificateError('unreadable_certificate') from None
        loaded = [load_certificate(c) for c in certs]
        for candidate in loaded:
            if candidate.matches(key):
                return candidate, key
        return loaded[0], key
    except UnsupportedAlgorithm:
        raise CertificateError('unreadable_certificate') from None
    if key is None:
        raise CertificateError('unreadable_key')
    certs = ([cert] if cert is not None else []) + list(extra or [])
    if not certs:
        raise CertificateError('unreadable_certificate')
    # cryptography keeps the certificates' original DER.
    loaded = [load_certificate(c.public_bytes(serialization.Encoding.DER))
        for c in certs]
    for candidate in loaded:
        if candidate.matches(key):
            return candidate, key
    return loaded[0], key


def _bmp_password(password):
    "PKCS#12 (RFC 7292 B.1) password: BMPString with a trailing NUL."
    if password is None:
        return b''
    return password.decode('utf-8').encode('utf-16-be') + b'\x00\x00'


def _pkcs12_kdf(hash_name, password, salt, iterations, purpose, length):
    "RFC 7292 appendix B.2 key derivation (keys, IVs and MAC keys)."
    u = hashlib.new(hash_name).digest_size
    v = hashlib.new(hash_name).block_size
    d = bytes([purpose]) * v

    def stretch(value):
        if not value:
            return b''
        size = v * -(-len(value) // v)
        return (value * (size // len(value) + 1))[:size]

    i = stretch(salt) + stretch(password)
    out = b''
    while len(out) < length:
        a = hashlib.new(hash_name, d + i).digest()
        for _ in range(iterations - 1):
            a = hashlib.new(hash_name, a).digest()
        out += a
        b = int.from_bytes((a * (v // u + 1))[:v], 'big')
        i = b''.join(
            ((int.from_bytes(i[j:j + v], 'big') + b + 1) % (1 << (8 * v)))
            .to_bytes(v, 'big')
            for j in range(0, len(i), v))
    return out[:length]


def _pkcs12_passwords(password):
    # OpenSSL writes a file without password with either an empty or an
    # absent password; try both as it does.
    if password is None:
        return [None, b'']
    return [password]


def _pkcs12_fallback(data, password):
    """(key DER, [certificate DER]) of a PKCS#12 file read with asn1crypto.

    Used when cryptography refuses the file, typically because it holds a
    KSeF-issued certificate (see the module docstring).  Verifies the MAC
    (a wrong password is reported as such), decrypts password-encrypted
    contents and keys (PBES2 with PBKDF2 and AES or 3DES, PKCS#12 PBE with
    3DES or 128-bit RC2), collects certificate bags verbatim and returns
    the key as unencrypted PKCS#8 DER for `load_private_key`.  (Keys are
    decrypted here, not by cryptography, which takes an empty password for
    none while PKCS#12 tools do encrypt with the empty password.)
    """
    try:
        pfx = asn1_pkcs12.Pfx.load(data)
        auth_safe = list(pfx.authenticated_safe)
        content = pfx['auth_safe']['content'].native
        mac_data = pfx['mac_data']
        has_mac = mac_data.native is not None
    except _ASN1_ERRORS:
        raise CertificateError('unreadable_certificate') from None
    passwords = _pkcs12_passwords(password)
    if has_mac:
        passwords = [p for p in passwords if _mac_ok(mac_data, content, p)]
        if not passwords:
            raise CertificateError('wrong_password')
    error = None
    for candidate in passwords:
        keys, certs = [], []
        try:
            for content_info in auth_safe:
                _read_content(content_info, candidate, keys, certs)
        except CertificateError as exc:
            error = exc
            continue
        except _ASN1_ERRORS:
            error = CertificateError('unreadable_certificate')
            continue
        if not keys:
            raise CertificateError('unreadable_key')
        return keys[0], certs
    raise error


def _mac_ok(mac_data, content, password):
    try:
        hash_name = mac_data['mac']['digest_algorithm']['algorithm'].native
        digest = hashlib.new(hash_name)
    except (ValueError, TypeError, KeyError):
        # An unknown MAC (e.g. PBMAC1): decryption still tests the password.
        return True
    try:
        iterations = mac_data['iterations'].native or 1
        if not isinstance(iterations, int) or iterations > MAX_ITERATIONS:
            raise CertificateError('unreadable_certificate')
        key = _pkcs12_kdf(hash_name, _bmp_password(password),
            mac_data['mac_salt'].native, iterations, 3, digest.digest_size)
        expected = mac_data['mac']['digest'].native
        mac = hmac.new(key, content, hash_name).digest()
        return hmac.compare_digest(mac, expected)
    except _ASN1_ERRORS:
        raise CertificateError('unreadable_certificate') from None


def _read_content(content_info, password, keys, certs):
    kind = content_info['content_type'].native
    if kind == 'data':
        safe = asn1_pkcs12.SafeContents.load(content_info['content'].native)
    elif kind == 'encrypted_data':
        info = content_info['content']['encrypted_content_info']
        plain = _pbe_decrypt(info['content_encryption_algorithm'],
            info['encrypted_content'].native, password)
        safe = asn1_pkcs12.SafeContents.load(plain)
    else:
        # Public-key privacy mode (enveloped data) is not used for keys
        # that users export; nothing readable in it.
        return
    _read_bags(safe, password, keys, certs)


def _read_bags(safe, password, keys, certs):
    try:
        for bag in safe:
            kind = bag['bag_id'].native
            value = bag['bag_value']
            if kind == 'cert_bag':
                if value['cert_id'].native == 'x509':
                    certs.append(bytes(value['cert_value']))
            elif kind == 'pkcs8_shrouded_key_bag':
                keys.append(_pbe_decrypt(value['encryption_algorithm'],
                    value['encrypted_data'].native, password))
            elif kind == 'key_bag':
                keys.append(value.untag().dump(force=True))
            elif kind == 'safe_contents':
                _read_bags(value, password, keys, certs)
    except _ASN1_ERRORS:
        raise CertificateError('wrong_password') from None


def _pbe_decrypt(algorithm, data, password):
    "Decrypt password-encrypted PKCS#12 contents."
    try:
        kdf = algorithm.kdf
        cipher_name = algorithm.encryption_cipher
        key_length = algorithm.key_length
        salt = algorithm.kdf_salt
        iterations = algorithm.kdf_iterations
        hash_name = algorithm.kdf_hmac
    except _ASN1_ERRORS:
        raise CertificateError('unreadable_certificate') from None
    if cipher_name == 'rc2' and key_length != 16:
        raise CertificateError('unsupported_pkcs12')
    if not isinstance(iterations, int) or iterations > MAX_ITERATIONS:
        raise CertificateError('unreadable_certificate')
    if kdf == 'pbkdf2':
        key = PBKDF2HMAC(algorithm=_hash(hash_name), length=key_length,
            salt=salt, iterations=iterations).derive(password or b'')
        iv = algorithm.encryption_iv
    elif kdf == 'pkcs12_kdf':
        bmp = _bmp_password(password)
        key = _pkcs12_kdf(hash_name, bmp, salt, iterations, 1, key_length)
        iv = _pkcs12_kdf(hash_name, bmp, salt, iterations, 2,
            algorithm.encryption_block_size)
    else:
        raise CertificateError('unreadable_certificate')
    cipher = _cipher(cipher_name, key)
    decryptor = Cipher(cipher, modes.CBC(iv)).decryptor()
    padded = decryptor.update(data) + decryptor.finalize()
    unpadder = padding.PKCS7(cipher.block_size).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise CertificateError('wrong_password') from None


def _hash(name):
    try:
        return {'sha1': hashes.SHA1, 'sha224': hashes.SHA224,
            'sha256': hashes.SHA256, 'sha384': hashes.SHA384,
            'sha512': hashes.SHA512}[name]()
    except KeyError:
        raise CertificateError('unreadable_certificate') from None


def _cipher(name, key):
    if name == 'aes':
        return algorithms.AES(key)
    # Legacy ciphers live in cryptography's "decrepit" package.
    from cryptography.hazmat.decrepit.ciphers import algorithms as old
    if name == 'tripledes':
        return old.TripleDES(key)
    if name == 'rc2':
        return old.RC2(key)
    raise CertificateError('unreadable_certificate')


# --- checks ----------------------------------------------------------------

def _check_key_strength(certificate):
    public_key = certificate.public_key
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise CertificateError('weak_key',
                key_type=certificate.key_type,
                minimum='RSA %d' % MIN_RSA_BITS)
        return
    if (isinstance(public_key, ec.EllipticCurvePublicKey)
            and isinstance(public_key.curve, ec.SECP256R1)):
        return
    # KSeF certificates are RSA 2048 or EC P-256 (PROTOCOL.md §5) and
    # CODE II signs with exactly those (§14).
    raise CertificateError('unsupported_key', key_type=certificate.key_type)


def _normalise_nip(nip):
    digits = re.sub(r'\D', '', str(nip))
    return digits or None


def _iso(moment):
    return moment.astimezone(timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')


def check(certificate, key, purpose, nip=None, now=None):
    """Check that `certificate` (with private `key`, if not None) can be
    used for `purpose` ('authentication', 'offline' or None: any).

    Raises CertificateError for a blocking problem, in this order: key type
    or size, key not matching, purpose, validity.  Returns a list of
    CertificateWarning: 'nip_mismatch' when the subject's NIP differs from
    company `nip` (legitimate for an authorised person, so only a warning;
    PESEL and fingerprint subjects get none) and 'expires_soon'.
    """
    if purpose is not None and purpose not in PURPOSES:
        raise ValueError("purpose must be one of %r" % (PURPOSES,))
    if now is None:
        now = datetime.now(timezone.utc)
    elif now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    _check_key_strength(certificate)
    if key is not None and not certificate.matches(key):
        raise CertificateError('key_mismatch')
    if purpose is not None and certificate.purpose != purpose:
        raise CertificateError('purpose_mismatch', expected=purpose,
            found=certificate.purpose or 'none')
    if now < certificate.not_before:
        raise CertificateError('not_yet_valid',
            not_before=_iso(certificate.not_before))
    if now > certificate.not_after:
        raise CertificateError('expired',
            not_after=_iso(certificate.not_after))
    warnings = []
    company_nip = _normalise_nip(nip) if nip else None
    if (company_nip and certificate.nip
            and certificate.nip != company_nip):
        warnings.append(CertificateWarning('nip_mismatch', {
            'certificate_nip': certificate.nip, 'nip': company_nip}))
    left = certificate.not_after - now
    if left < EXPIRY_WARNING:
        warnings.append(CertificateWarning('expires_soon', {
            'not_after': _iso(certificate.not_after),
            'days': str(left.days)}))
    return warnings


def inspect(cert_bytes=None, key_bytes=None, password=None, p12_bytes=None,
        purpose=None, nip=None, now=None):
    """Load and check a certificate with its key: THE shared implementation
    behind the Tryton upload and ``trytond-ksef inspect-certificate``.

    Give either `cert_bytes` (and optionally `key_bytes`, with `password`
    if encrypted) or `p12_bytes` (with `password`).  Returns an Inspection;
    raises CertificateError (see `check`).
    """
    if p12_bytes is not None:
        if cert_bytes is not None or key_bytes is not None:
            raise TypeError("give either p12_bytes or cert_bytes/key_bytes")
        certificate, key = load_pkcs12(p12_bytes, password)
    elif cert_bytes is None:
        raise TypeError("cert_bytes or p12_bytes is required")
    else:
        certificate = load_certificate(cert_bytes)
        key = None
    try:
        if key_bytes is not None:
            key = load_private_key(key_bytes, password)
        warnings = check(certificate, key, purpose, nip=nip, now=now)
    except CertificateError as error:
        error.certificate = certificate
        raise
    return Inspection(certificate, key, tuple(warnings))


# --- command line ----------------------------------------------------------

def configure_parser(parser):
    "Arguments of ``trytond-ksef inspect-certificate``."
    parser.add_argument('--cert', metavar='FILE',
        help="certificate file (PEM, DER or Base64)")
    parser.add_argument('--key', metavar='FILE',
        help="private key file (PKCS#8, PKCS#1 or SEC1; PEM or DER)")
    parser.add_argument('--p12', metavar='FILE',
        help="PKCS#12 file holding the certificate and its key")
    parser.add_argument('--password-file', metavar='FILE',
        help="file whose first line is the key or PKCS#12 password")
    parser.add_argument('--purpose', choices=PURPOSES,
        help="what the certificate must be usable for")
    parser.add_argument('--nip', help="the company's NIP (compared with the "
        "NIP in the certificate)")
    return parser


def _read_password(path):
    with open(path, 'rb') as file:
        content = file.read()
    # The first line, without its end of line: editors add one.
    return content.splitlines()[0] if content.strip(b'\r\n') else b''


def run(args):
    "Print what the certificate is and whether it can be used; exit 0 if so."
    out, err = sys.stdout, sys.stderr
    if bool(args.p12) == bool(args.cert):
        print("error: give --cert (with --key) or --p12", file=err)
        return 2
    if args.p12 and args.key:
        print("error: --key cannot be used with --p12", file=err)
        return 2
    try:
        password = (_read_password(args.password_file)
            if args.password_file else None)
        if args.p12:
            with open(args.p12, 'rb') as file:
                sources = {'p12_bytes': file.read()}
        else:
            with open(args.cert, 'rb') as file:
                sources = {'cert_bytes': file.read()}
            if args.key:
                with open(args.key, 'rb') as file:
                    sources['key_bytes'] = file.read()
    except OSError as error:
        print("error: %s: %s" % (error.filename, error.strerror), file=err)
        return 2
    try:
        result = inspect(password=password, purpose=args.purpose,
            nip=args.nip, **sources)
    except CertificateError as error:
        # Show the certificate when it could be read, then the reason.
        if error.certificate is not None:
            _describe(error.certificate, out)
        if error.code in _KEY_ERRORS:
            print("%-13s %s" % ("Private key:", "not usable"), file=out)
        print("error: %s" % error, file=err)
        return 1
    certificate = result.certificate
    _describe(certificate, out)
    if result.key is None:
        key_state = "not checked (no --key)"
    elif password:
        key_state = "matches the certificate; password accepted"
    else:
        key_state = "matches the certificate (not encrypted)"
    print("%-13s %s" % ("Private key:", key_state), file=out)
    for warning in result.warnings:
        print("warning: %s" % warning, file=out)
    if certificate.purpose is None:
        print("error: the certificate's key usage fits no KSeF use",
            file=err)
        return 1
    print("%-13s %s" % ("Result:", "usable for %s" % certificate.purpose),
        file=out)
    return 0


_KEY_ERRORS = {'key_mismatch', 'wrong_password', 'unreadable_key'}


def _describe(certificate, out):
    lines = [
        ("Subject", certificate.subject),
        ("Issuer", certificate.issuer),
        ("Purpose", certificate.purpose or "none (key usage fits no KSeF "
            "use)"),
        ("Identifier", str(certificate.identifier)),
        ("Serial", certificate.serial_hex),
        ("Fingerprint", certificate.fingerprint),
        ("Key type", certificate.key_type),
        ("Valid from", _iso(certificate.not_before)),
        ("Valid until", _iso(certificate.not_after)),
        ]
    if certificate.qualified:
        lines.append(("Qualified", "yes (EU qualified certificate)"))
    for label, value in lines:
        print("%-13s %s" % (label + ':', value), file=out)
