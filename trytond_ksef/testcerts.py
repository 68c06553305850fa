# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Self-signed test certificates shaped like KSeF's (PROTOCOL.md §4.2, §5).

For tests, the demo and the simulator: KSeF's TEST environment accepts
self-signed certificates that carry the same subject attributes as real
ones.  `make_certificate` returns ``(cert_der, private_key)``:

* company seal (``seal=True``): C=PL, organizationIdentifier
  ``VATPL-<NIP>``, O, CN (no givenName/surname, as KSeF requires);
* person: C=PL, givenName, surname, serialNumber ``TINPL-<NIP>`` or
  ``PNOPL-<PESEL>``, CN; without NIP and PESEL KSeF identifies the
  certificate by its SHA-256 fingerprint;
* keyUsage (critical): digitalSignature for 'authentication',
  nonRepudiation for 'offline', as KSeF issues them.

Generating RSA keys is slow (tenths of a second), so unless a `key` is
given the key comes from a per-process cache: certificates made with the
same key type, size and curve SHARE their key.  Pass ``key=new_key(...)``
when a test needs distinct keys (e.g. a key that does not match).
"""
import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12 as _pkcs12
from cryptography.x509.oid import NameOID

__all__ = ['make_certificate', 'new_key', 'cached_key', 'pem',
    'private_key_pem', 'pkcs12', 'qualified_extension']

_CURVES = {
    'P-256': ec.SECP256R1, 'secp256r1': ec.SECP256R1,
    'P-384': ec.SECP384R1, 'secp384r1': ec.SECP384R1,
    'P-521': ec.SECP521R1, 'secp521r1': ec.SECP521R1,
    }
_KEY_USAGE = {
    'authentication': {'digital_signature'},
    'offline': {'content_commitment'},
    }
_KEY_USAGE_BITS = ('digital_signature', 'content_commitment',
    'key_encipherment', 'data_encipherment', 'key_agreement',
    'key_cert_sign', 'crl_sign', 'encipher_only', 'decipher_only')
_CACHE = {}


def _curve(curve):
    if curve is None:
        return ec.SECP256R1()
    if isinstance(curve, ec.EllipticCurve):
        return curve
    return _CURVES[curve]()


def new_key(key_type='rsa', key_size=2048, curve=None):
    """A fresh private key: 'rsa' (`key_size` bits), 'ec' (`curve`, a name
    such as 'P-256' or a cryptography curve; P-256 by default) or
    'ed25519' (not accepted by KSeF: for negative tests)."""
    if key_type == 'rsa':
        return rsa.generate_private_key(
            public_exponent=65537, key_size=key_size)
    if key_type == 'ec':
        return ec.generate_private_key(_curve(curve))
    if key_type == 'ed25519':
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError("unknown key type %r" % key_type)


def cached_key(key_type='rsa', key_size=2048, curve=None):
    "The key of this process for these parameters (made once)."
    if key_type == 'rsa':
        cache_key = (key_type, key_size)
    elif key_type == 'ec':
        cache_key = (key_type, _curve(curve).name)
    else:
        cache_key = (key_type,)
    if cache_key not in _CACHE:
        _CACHE[cache_key] = new_key(key_type, key_size, curve)
    return _CACHE[cache_key]


def qualified_extension():
    """A qcStatements extension with QcCompliance (ETSI EN 319 412-5): what
    makes a certificate EU-qualified, e.g. for a qualified signature."""
    # SEQUENCE { SEQUENCE { OID 0.4.0.1862.1.1 } }
    value = bytes.fromhex('300a3008060604008e460101')
    return x509.UnrecognizedExtension(
        x509.ObjectIdentifier('1.3.6.1.5.5.7.1.3'), value)


def _subject(nip, pesel, seal, common_name, given_name, surname):
    attributes = [x509.NameAttribute(NameOID.COUNTRY_NAME, 'PL')]
    if seal:
        if not nip:
            raise ValueError("a company seal needs a NIP")
        if pesel:
            raise ValueError("a company seal has no PESEL")
        attributes += [
            x509.NameAttribute(
                NameOID.ORGANIZATION_IDENTIFIER, 'VATPL-%s' % nip),
            x509.NameAttribute(
                NameOID.ORGANIZATION_NAME, common_name or 'Test %s' % nip),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name or nip),
            ]
        return x509.Name(attributes)
    if nip and pesel:
        raise ValueError("a person's certificate has a NIP or a PESEL")
    attributes += [
        x509.NameAttribute(NameOID.GIVEN_NAME, given_name),
        x509.NameAttribute(NameOID.SURNAME, surname),
        ]
    if pesel:
        attributes.append(
            x509.NameAttribute(NameOID.SERIAL_NUMBER, 'PNOPL-%s' % pesel))
    elif nip:
        attributes.append(
            x509.NameAttribute(NameOID.SERIAL_NUMBER, 'TINPL-%s' % nip))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME,
        common_name or '%s %s' % (given_name, surname)))
    return x509.Name(attributes)


def _random_serial():
    # 64-bit like KSeF's (16 hex digits), positive, top nibble non-zero.
    return int.from_bytes(os.urandom(8), 'big') >> 4 | 1 << 59


def make_certificate(purpose='authentication', nip=None, pesel=None,
        key_type='rsa', not_before=None, not_after=None, common_name=None,
        seal=False, key_size=2048, curve=None, key=None, serial_number=None,
        key_usage=None, extensions=(), given_name='Jan',
        surname='Kowalski'):
    """A self-signed certificate shaped like a KSeF one.

    Returns ``(cert_der, private_key)``.  `purpose` is 'authentication',
    'offline' or None (no keyUsage extension); `key_usage` overrides it
    with a set of cryptography KeyUsage field names (e.g.
    ``{'digital_signature', 'content_commitment'}``).  Validity defaults to
    yesterday .. two years later (UTC).  `extensions` adds extension values
    (non-critical), e.g. `qualified_extension()`.
    """
    if key is None:
        key = cached_key(key_type, key_size, curve)
    now = datetime.datetime.now(datetime.timezone.utc).replace(
        microsecond=0)
    if not_before is None:
        not_before = now - datetime.timedelta(days=1)
    if not_after is None:
        not_after = now + datetime.timedelta(days=730)
    if serial_number is None:
        serial_number = _random_serial()
    name = _subject(nip, pesel, seal, common_name, given_name, surname)
    builder = (x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial_number)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None),
            critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
            critical=False))
    if key_usage is None and purpose is not None:
        key_usage = _KEY_USAGE[purpose]
    if key_usage is not None:
        unknown = set(key_usage) - set(_KEY_USAGE_BITS)
        if unknown:
            raise ValueError("unknown key usage %s" % sorted(unknown))
        builder = builder.add_extension(x509.KeyUsage(
            **{bit: bit in key_usage for bit in _KEY_USAGE_BITS}),
            critical=True)
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    algorithm = (None if isinstance(key, ed25519.Ed25519PrivateKey)
        else hashes.SHA256())
    certificate = builder.sign(key, algorithm)
    return certificate.public_bytes(serialization.Encoding.DER), key


def pem(cert_der):
    "The PEM text (bytes) of a DER certificate."
    return x509.load_der_x509_certificate(cert_der).public_bytes(
        serialization.Encoding.PEM)


def private_key_pem(key, password=None, traditional=False):
    """The key in PEM: PKCS#8, encrypted when `password` is given;
    ``traditional=True`` writes PKCS#1 (RSA) / SEC1 (EC) instead."""
    if isinstance(password, str):
        password = password.encode('utf-8')
    encryption = (serialization.BestAvailableEncryption(password)
        if password else serialization.NoEncryption())
    key_format = (serialization.PrivateFormat.TraditionalOpenSSL
        if traditional else serialization.PrivateFormat.PKCS8)
    return key.private_bytes(
        serialization.Encoding.PEM, key_format, encryption)


def pkcs12(cert_der, key, password=None, cas=(), name=b'KSeF test'):
    """A PKCS#12 file of the certificate and key (and `cas`, DER), with
    the library's best encryption under `password` (none if None)."""
    if isinstance(password, str):
        password = password.encode('utf-8')
    encryption = (serialization.BestAvailableEncryption(password)
        if password else serialization.NoEncryption())
    return _pkcs12.serialize_key_and_certificates(
        name, key, x509.load_der_x509_certificate(cert_der),
        [x509.load_der_x509_certificate(c) for c in cas] or None,
        encryption)
