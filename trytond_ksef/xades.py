# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""XAdES-signed ``AuthTokenRequest``: KSeF authentication path A.

The client builds the request (:func:`build_auth_token_request`) and signs
it (:func:`sign`); the simulator checks a signed request as strictly as KSeF
does (:func:`verify`).  PROTOCOL.md section 4.2.

Signature profile (what MF's reference clients produce, both accepted by
KSeF on TEST, DEMO and PRD):

* enveloped XAdES-BES (XAdES-BASELINE-B content) in the root element;
* exclusive canonicalization (``xml-exc-c14n#``) for ``SignedInfo`` and as
  an explicit transform of both references, so neither digest depends on
  the namespaces in scope: a reference without transforms is canonicalized
  with *inclusive* C14N 1.0 by verifiers, and a signer that hashed it any
  other way produces a ``SignedProperties`` digest KSeF refuses with a bare
  9105;
* two references: the whole document (``URI=""``, enveloped-signature +
  exclusive C14N) and ``xades:SignedProperties`` (``Type`` =
  ``http://uri.etsi.org/01903#SignedProperties``); ``KeyInfo`` is not
  signed (neither reference client signs it);
* SHA-256 digests, also for the signing-certificate digest;
* ``xades:SigningCertificate`` (XAdES 1.3.2, digest + issuer/serial), as
  the Java client (EU DSS with ``en319132=false``) and the C# client write
  it; the docs are silent on SigningCertificate vs SigningCertificateV2,
  so the form known to pass KSeF's strict validation is used.  The verifier
  accepts both;
* RSA keys sign with ``rsa-sha256``, EC keys with ``ecdsa-sha256`` (P-256;
  SHA-384/512 for P-384/P-521 as the Java client does), the ECDSA value
  being R||S of fixed length (signxml writes it so).

signxml (``XAdESSigner``) builds the signature; this module only replaces
the parts of its XAdES profile that KSeF needs otherwise: the explicit
transform on the SignedProperties reference, no KeyInfo reference, fixed
Ids (the output is deterministic apart from SigningTime and, for ECDSA,
the signature value) and a certificate taken as the original DER bytes.
KSeF-issued certificates carry a NULL parameter in their ECDSA signature
algorithm that current ``cryptography`` refuses to parse, so the bytes
embedded in KeyInfo and hashed in SigningCertificate are always exactly
the bytes given, never a re-encoding of a parsed certificate.
"""
import base64
import binascii
import copy
import datetime
import re
from dataclasses import dataclass

import cryptography.exceptions
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from lxml import etree
from signxml import DigestAlgorithm, SignatureMethod
from signxml.xades import XAdESDataObjectFormat, XAdESSigner

from . import certificates, xmlutil

__all__ = [
    'build_auth_token_request', 'sign', 'verify', 'VerifiedRequest',
    'XAdESError', 'RequestError', 'SignatureError', 'KSEF_ERROR_CODES',
    'CONTEXT_TYPES', 'SUBJECT_IDENTIFIER_TYPES', 'NS_DS', 'NS_XADES',
    'SIGNED_PROPERTIES_TYPE',
    ]

NS_DS = 'http://www.w3.org/2000/09/xmldsig#'
NS_XADES = 'http://uri.etsi.org/01903/v1.3.2#'
NS_AUTH = xmlutil.NS_AUTH
# KSeF still accepts the 2.0 namespace (PROTOCOL.md 4.2).
NS_AUTH_20 = 'http://ksef.mf.gov.pl/auth/token/2.0'
AUTH_NAMESPACES = (NS_AUTH, NS_AUTH_20)
SIGNED_PROPERTIES_TYPE = 'http://uri.etsi.org/01903#SignedProperties'
ENVELOPED = 'http://www.w3.org/2000/09/xmldsig#enveloped-signature'
EXC_C14N = 'http://www.w3.org/2001/10/xml-exc-c14n#'
XPATH_FILTER = 'http://www.w3.org/TR/1999/REC-xpath-19991116'
_SIGNATURE_FILTER = re.compile(
    r'not\(ancestor-or-self::([A-Za-z_][\w.-]*):Signature\)')
C14N_10 = 'http://www.w3.org/TR/2001/REC-xml-c14n-20010315'

# Fixed Ids: the unsigned request has no Id attribute (its XSD allows none),
# and MF's C# client uses the same two names.
SIGNATURE_ID = 'Signature'
SIGNED_PROPERTIES_ID = 'SignedProperties'
DOCUMENT_REFERENCE_ID = 'DocumentReference'
# Written into SigningTime this much in the past: a client clock slightly
# ahead of KSeF's must not yield a signature "from the future" (MF's C#
# client does the same).
SIGNING_TIME_BACKDATE = datetime.timedelta(minutes=1)

# context type (as the KSeF JSON API spells it, first letter lowered) ->
# element of TContextIdentifier in schemat_auth_v2-1.xsd
CONTEXT_TYPES = {
    'nip': 'Nip',
    'internalId': 'InternalId',
    'nipVatUe': 'NipVatUe',
    'peppolId': 'PeppolId',
    }
_CONTEXT_ELEMENTS = {v: k for k, v in CONTEXT_TYPES.items()}
SUBJECT_IDENTIFIER_TYPES = ('certificateSubject', 'certificateFingerprint')
_ALLOWED_IPS = (
    ('ip4_addresses', 'Ip4Address'),
    ('ip4_ranges', 'Ip4Range'),
    ('ip4_masks', 'Ip4Mask'),
    )

# Algorithms KSeF accepts (PROTOCOL.md 4.2), as the verifier applies them.
# canonicalization URI -> (exclusive, with_comments).  C14N 1.1 is
# computed as C14N 1.0 (lxml has no 1.1; signxml does the same): both give
# the same octets unless xml:id/xml:base attributes are inherited into a
# document subset, which a KSeF request never has.
C14N_METHODS = {
    C14N_10: (False, False),
    C14N_10 + '#WithComments': (False, True),
    'http://www.w3.org/2006/12/xml-c14n11': (False, False),
    'http://www.w3.org/2006/12/xml-c14n11#WithComments': (False, True),
    EXC_C14N: (True, False),
    EXC_C14N + 'WithComments': (True, True),
    }
DIGEST_METHODS = {
    'http://www.w3.org/2000/09/xmldsig#sha1': hashes.SHA1,
    'http://www.w3.org/2001/04/xmlenc#sha256': hashes.SHA256,
    'http://www.w3.org/2001/04/xmldsig-more#sha384': hashes.SHA384,
    'http://www.w3.org/2001/04/xmlenc#sha512': hashes.SHA512,
    'http://www.w3.org/2007/05/xmldsig-more#sha3-256': hashes.SHA3_256,
    'http://www.w3.org/2007/05/xmldsig-more#sha3-384': hashes.SHA3_384,
    'http://www.w3.org/2007/05/xmldsig-more#sha3-512': hashes.SHA3_512,
    }
_MORE = 'http://www.w3.org/2001/04/xmldsig-more#'
_MORE07 = 'http://www.w3.org/2007/05/xmldsig-more#'
_MORE21 = 'http://www.w3.org/2021/04/xmldsig-more#'
# signature method URI -> (key kind, hash)
SIGNATURE_METHODS = {
    'http://www.w3.org/2000/09/xmldsig#rsa-sha1': ('rsa', hashes.SHA1),
    _MORE + 'rsa-sha256': ('rsa', hashes.SHA256),
    _MORE + 'rsa-sha384': ('rsa', hashes.SHA384),
    _MORE + 'rsa-sha512': ('rsa', hashes.SHA512),
    _MORE07 + 'sha1-rsa-MGF1': ('rsa-pss', hashes.SHA1),
    _MORE07 + 'sha256-rsa-MGF1': ('rsa-pss', hashes.SHA256),
    _MORE07 + 'sha384-rsa-MGF1': ('rsa-pss', hashes.SHA384),
    _MORE07 + 'sha512-rsa-MGF1': ('rsa-pss', hashes.SHA512),
    _MORE07 + 'sha3-256-rsa-MGF1': ('rsa-pss', hashes.SHA3_256),
    _MORE07 + 'sha3-384-rsa-MGF1': ('rsa-pss', hashes.SHA3_384),
    _MORE07 + 'sha3-512-rsa-MGF1': ('rsa-pss', hashes.SHA3_512),
    _MORE + 'ecdsa-sha1': ('ecdsa', hashes.SHA1),
    _MORE + 'ecdsa-sha256': ('ecdsa', hashes.SHA256),
    _MORE + 'ecdsa-sha384': ('ecdsa', hashes.SHA384),
    _MORE + 'ecdsa-sha512': ('ecdsa', hashes.SHA512),
    _MORE21 + 'ecdsa-sha3-256': ('ecdsa', hashes.SHA3_256),
    _MORE21 + 'ecdsa-sha3-384': ('ecdsa', hashes.SHA3_384),
    _MORE21 + 'ecdsa-sha3-512': ('ecdsa', hashes.SHA3_512),
    }
MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
# Signing: curve -> signature method (as MF's Java client chooses).
_EC_SIGNATURE_METHODS = {
    'secp256r1': SignatureMethod.ECDSA_SHA256,
    'secp384r1': SignatureMethod.ECDSA_SHA384,
    'secp521r1': SignatureMethod.ECDSA_SHA512,
    }

# What KSeF answers (HTTP 400 exception code, PROTOCOL.md 4.2) when it
# finds what each verification error code describes.  KSeF documents only
# 9105 "invalid signature" for every cryptographic failure.
KSEF_ERROR_CODES = {
    'xades_unreadable': 21001,
    'xades_malformed': 9101,
    'xades_no_signature': 9102,
    'xades_too_many_signatures': 9103,
    'xades_unsupported': 9105,
    'xades_bad_digest': 9105,
    'xades_bad_signature_value': 9105,
    'xades_signed_properties_mismatch': 9105,
    'xades_signing_certificate_mismatch': 9105,
    'xades_invalid_certificate': 21115,
    'xades_schema_invalid': 21401,
    }


class XAdESError(Exception):
    """Base error of this module: a stable machine ``code``, plain
    ``params`` and an English ``str()``.  Never holds key material."""
    code = 'xades_error'
    messages = {}

    def __init__(self, code, **params):
        self.code = code
        self.params = params
        super().__init__(code)

    def __str__(self):
        template = self.messages.get(self.code, self.code)
        return template.format(**self.params)


class RequestError(XAdESError):
    "The request cannot be built or signed as asked."
    messages = {
        'xades_context_type': ("Unknown context identifier type "
            "{context_type!r} (expected one of {expected})"),
        'xades_subject_identifier_type': ("Unknown subject identifier "
            "type {subject_identifier_type!r}"),
        'xades_request_invalid': ("The authentication request does not "
            "match the KSeF schema: {errors}"),
        'xades_already_signed': "The document already carries a signature",
        'xades_id_conflict': ("The document already uses the Id "
            "{id!r} that the signature needs"),
        'xades_unsupported_key': ("Unsupported signing key: {reason}"),
        'xades_key_mismatch': ("The private key does not belong to the "
            "certificate"),
        'xades_invalid_certificate': ("The certificate cannot be read: "
            "{reason}"),
        'xades_signing_time': "The signing time must be timezone-aware",
        }


class SignatureError(XAdESError):
    """A signed request refused by :func:`verify`.  ``ksef_code`` is the
    exception code KSeF answers in that case (:data:`KSEF_ERROR_CODES`)."""
    messages = {
        'xades_unreadable': "The signed request is not readable XML: "
            "{reason}",
        'xades_malformed': "The signed request is malformed: {reason}",
        'xades_no_signature': "The request carries no XML signature",
        'xades_too_many_signatures': ("The request carries {count} "
            "signatures; exactly one is allowed"),
        'xades_unsupported': ("The signature uses something KSeF does "
            "not accept: {reason}"),
        'xades_bad_digest': ("The signed document was modified after "
            "signing (digest mismatch)"),
        'xades_bad_signature_value': ("The signature value does not "
            "verify with the embedded certificate"),
        'xades_signed_properties_mismatch': ("The XAdES signed properties "
            "were modified after signing (digest mismatch)"),
        'xades_signing_certificate_mismatch': ("The XAdES signing "
            "certificate digest does not match the embedded certificate"),
        'xades_invalid_certificate': ("The signing certificate is not "
            "acceptable: {reason}"),
        'xades_schema_invalid': ("The signed request does not match the "
            "KSeF schema: {errors}"),
        }

    @property
    def ksef_code(self):
        return KSEF_ERROR_CODES.get(self.code)


def _qn(ns, tag):
    return '{%s}%s' % (ns, tag)


# --------------------------------------------------------------------------
# Building the request


def build_auth_token_request(challenge, context,
        subject_identifier_type='certificateSubject', allowed_ips=None):
    """Return the unsigned ``AuthTokenRequest`` (2.1 namespace) as bytes.

    `context` is ``(type, value)`` with type ``'nip'``, ``'internalId'``,
    ``'nipVatUe'`` or ``'peppolId'``.  `allowed_ips` optionally restricts
    the resulting access token: a mapping with any of ``'ip4_addresses'``,
    ``'ip4_ranges'``, ``'ip4_masks'`` (lists of strings, 10 each at most).
    The result is checked against the packaged XSD before it is returned:
    the XSD has no slot for ``ds:Signature``, so the check must come before
    signing.
    """
    context_type, context_value = context
    if context_type not in CONTEXT_TYPES:
        raise RequestError('xades_context_type', context_type=context_type,
            expected=', '.join(CONTEXT_TYPES))
    if subject_identifier_type not in SUBJECT_IDENTIFIER_TYPES:
        raise RequestError('xades_subject_identifier_type',
            subject_identifier_type=subject_identifier_type)
    root = etree.Element(_qn(NS_AUTH, 'AuthTokenRequest'),
        nsmap={None: NS_AUTH})
    etree.SubElement(root, _qn(NS_AUTH, 'Challenge')).text = str(challenge)
    identifier = etree.SubElement(root, _qn(NS_AUTH, 'ContextIdentifier'))
    etree.SubElement(identifier,
        _qn(NS_AUTH, CONTEXT_TYPES[context_type])).text = str(context_value)
    etree.SubElement(root, _qn(NS_AUTH, 'SubjectIdentifierType')).text = (
        subject_identifier_type)
    if allowed_ips is not None:
        unknown = set(allowed_ips) - {k for k, _ in _ALLOWED_IPS}
        if unknown:
            raise RequestError('xades_request_invalid',
                errors="unknown allowed_ips keys: %s"
                % ', '.join(sorted(unknown)))
        policy = etree.SubElement(root, _qn(NS_AUTH, 'AuthorizationPolicy'))
        ips = etree.SubElement(policy, _qn(NS_AUTH, 'AllowedIps'))
        for key, tag in _ALLOWED_IPS:
            for value in allowed_ips.get(key) or ():
                etree.SubElement(ips, _qn(NS_AUTH, tag)).text = str(value)
    errors = xmlutil.schema_errors('auth', root)
    if errors:
        raise RequestError('xades_request_invalid',
            errors='; '.join(message for _, _, message in errors))
    return etree.tostring(root, xml_declaration=True, encoding='UTF-8')


# --------------------------------------------------------------------------
# Certificates


def _load_certificate(cert_der):
    """Parse a DER certificate, also the KSeF-issued ones (their NULL
    signature parameter is handled by certificates.parse_x509).

    IssuerSerial needs the parsed ``x509.Name`` of the issuer, hence a
    `cryptography` certificate here.  Raises ValueError when the bytes are
    no certificate.
    """
    try:
        return certificates.parse_x509(cert_der)
    except certificates.CertificateError:
        raise ValueError("not a readable X.509 certificate") from None


# --------------------------------------------------------------------------
# Signing


class _KSeFXAdESSigner(XAdESSigner):
    """signxml's XAdES signer with the profile KSeF expects (module
    docstring): explicit exclusive C14N on the SignedProperties reference,
    no KeyInfo reference, fixed Ids, XAdES 1.3.2 SigningCertificate over
    the original certificate bytes."""

    def __init__(self, cert_der, certificate, signing_time, **kwargs):
        super().__init__(
            digest_algorithm=DigestAlgorithm.SHA256,
            c14n_algorithm=EXC_C14N,
            data_object_format=XAdESDataObjectFormat(
                Description="KSeF AuthTokenRequest", MimeType='text/xml'),
            **kwargs)
        self._cert_der = cert_der
        self._certificate = certificate
        self._signing_time = signing_time

    def _add_key_info(self, sig_root, signing_settings):
        # The certificate exactly as given, never re-encoded.
        key_info = etree.SubElement(sig_root, _qn(NS_DS, 'KeyInfo'))
        x509_data = etree.SubElement(key_info, _qn(NS_DS, 'X509Data'))
        etree.SubElement(x509_data, _qn(NS_DS, 'X509Certificate')).text = (
            base64.b64encode(self._cert_der).decode('ascii'))

    def _build_xades_ds_object(self, sig_root, signing_settings):
        sig_root.set('Id', SIGNATURE_ID)
        signed_info = sig_root.find(_qn(NS_DS, 'SignedInfo'))
        signed_info.find(_qn(NS_DS, 'Reference')).set(
            'Id', DOCUMENT_REFERENCE_ID)
        ds_object = etree.SubElement(sig_root, _qn(NS_DS, 'Object'),
            nsmap=self.namespaces)
        qualifying = etree.SubElement(ds_object,
            _qn(NS_XADES, 'QualifyingProperties'), nsmap=self.namespaces,
            Target='#' + SIGNATURE_ID)
        signed_properties = etree.SubElement(qualifying,
            _qn(NS_XADES, 'SignedProperties'), Id=SIGNED_PROPERTIES_ID)
        signature_properties = etree.SubElement(signed_properties,
            _qn(NS_XADES, 'SignedSignatureProperties'))
        for annotator in self.signed_signature_properties_annotators:
            annotator(signature_properties, sig_root=sig_root,
                signing_settings=signing_settings)
        data_object_properties = etree.SubElement(signed_properties,
            _qn(NS_XADES, 'SignedDataObjectProperties'))
        for annotator in self.signed_data_object_properties_annotators:
            annotator(data_object_properties, sig_root=sig_root,
                signing_settings=signing_settings)

        # The reference names its canonicalization explicitly: without a
        # Transform a verifier applies inclusive C14N 1.0, not the method
        # the digest was computed with.
        reference = etree.SubElement(signed_info, _qn(NS_DS, 'Reference'),
            URI='#' + SIGNED_PROPERTIES_ID, Type=SIGNED_PROPERTIES_TYPE)
        transforms = etree.SubElement(reference, _qn(NS_DS, 'Transforms'))
        etree.SubElement(transforms, _qn(NS_DS, 'Transform'),
            Algorithm=self.c14n_alg.value)
        etree.SubElement(reference, _qn(NS_DS, 'DigestMethod'),
            Algorithm=self.digest_alg.value)
        c14n = self._c14n(signed_properties, algorithm=self.c14n_alg)
        etree.SubElement(reference, _qn(NS_DS, 'DigestValue')).text = (
            base64.b64encode(self._get_digest(c14n, self.digest_alg))
            .decode('ascii'))

    def add_signing_time(self, signed_signature_properties, sig_root,
            signing_settings):
        etree.SubElement(signed_signature_properties,
            _qn(NS_XADES, 'SigningTime')).text = (
            self._signing_time.strftime('%Y-%m-%dT%H:%M:%SZ'))

    def add_signing_certificate(self, signed_signature_properties, sig_root,
            signing_settings):
        signing_certificate = etree.SubElement(signed_signature_properties,
            _qn(NS_XADES, 'SigningCertificate'))
        cert = etree.SubElement(signing_certificate, _qn(NS_XADES, 'Cert'))
        digest = etree.SubElement(cert, _qn(NS_XADES, 'CertDigest'))
        etree.SubElement(digest, _qn(NS_DS, 'DigestMethod'),
            Algorithm=self.digest_alg.value)
        etree.SubElement(digest, _qn(NS_DS, 'DigestValue')).text = (
            base64.b64encode(self._get_digest(
                self._cert_der, self.digest_alg)).decode('ascii'))
        issuer_serial = etree.SubElement(cert, _qn(NS_XADES, 'IssuerSerial'))
        etree.SubElement(issuer_serial, _qn(NS_DS, 'X509IssuerName')).text = (
            self._certificate.issuer.rfc4514_string())
        etree.SubElement(issuer_serial,
            _qn(NS_DS, 'X509SerialNumber')).text = str(
            self._certificate.serial_number)


def _signature_method(private_key):
    if isinstance(private_key, rsa.RSAPrivateKey):
        if private_key.key_size < MIN_RSA_BITS:
            raise RequestError('xades_unsupported_key',
                reason="RSA keys need at least %d bits" % MIN_RSA_BITS)
        return SignatureMethod.RSA_SHA256
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        method = _EC_SIGNATURE_METHODS.get(private_key.curve.name)
        if method is None:
            raise RequestError('xades_unsupported_key',
                reason="EC curve %s" % private_key.curve.name)
        return method
    raise RequestError('xades_unsupported_key',
        reason="only RSA and EC keys can sign")


def sign(xml, cert_der, private_key, signing_time=None):
    """Sign `xml` (bytes, e.g. from :func:`build_auth_token_request`) with
    an enveloped XAdES-BES signature and return the signed document bytes.

    `cert_der` is the signing certificate as DER bytes; they are embedded
    and hashed unchanged.  `private_key` is a ``cryptography`` RSA (2048
    bits or more) or EC (P-256, P-384, P-521) private key matching it.
    `signing_time` (aware datetime) defaults to now minus one minute.
    """
    try:
        certificate = _load_certificate(cert_der)
    except ValueError as exc:
        raise RequestError('xades_invalid_certificate',
            reason=str(exc)) from None
    method = _signature_method(private_key)
    if (certificate.public_key().public_numbers()
            != private_key.public_key().public_numbers()):
        raise RequestError('xades_key_mismatch')
    if signing_time is None:
        signing_time = (datetime.datetime.now(datetime.timezone.utc)
            - SIGNING_TIME_BACKDATE)
    elif signing_time.tzinfo is None:
        raise RequestError('xades_signing_time')
    signing_time = signing_time.astimezone(datetime.timezone.utc)

    try:
        root = xmlutil.parse(xml)
    except xmlutil.XMLError as exc:
        raise RequestError('xades_request_invalid', errors=str(exc)) from None
    if root.find('.//' + _qn(NS_DS, 'Signature')) is not None:
        raise RequestError('xades_already_signed')
    used = {value for element in root.iter()
        for name, value in element.attrib.items()
        if etree.QName(name).localname in ('Id', 'ID', 'id')}
    for id_ in (SIGNATURE_ID, SIGNED_PROPERTIES_ID, DOCUMENT_REFERENCE_ID):
        if id_ in used:
            raise RequestError('xades_id_conflict', id=id_)

    signer = _KSeFXAdESSigner(cert_der, certificate, signing_time,
        signature_algorithm=method)
    signed = signer.sign(root, key=private_key, always_add_key_value=False)
    return etree.tostring(signed, xml_declaration=True, encoding='UTF-8')


# --------------------------------------------------------------------------
# Verification


@dataclass(frozen=True)
class VerifiedRequest:
    """What a verified signature covers, and nothing else.

    ``root`` is the signed document without its signature, re-read from
    the canonical octets the document digest was computed over (so no
    unsigned node can reach the caller); the other fields are read from it.
    ``certificate_der`` is the signing certificate's original bytes (read
    it with ``certificates.load_certificate``).
    """
    root: etree._Element
    certificate_der: bytes
    challenge: str
    # (type, value); type as in CONTEXT_TYPES ('nip', 'internalId', ...)
    context: tuple
    subject_identifier_type: str
    # {'ip4_addresses': (...), 'ip4_ranges': (...), 'ip4_masks': (...)}
    # when the request restricts IPs, else None
    allowed_ips: dict
    signing_time: datetime.datetime
    signature_method: str
    namespace: str


def _malformed(reason):
    return SignatureError('xades_malformed', reason=reason)


def _only(parent, ns, tag, what):
    found = parent.findall(_qn(ns, tag))
    if len(found) != 1:
        raise _malformed("expected exactly one %s" % what)
    return found[0]


def _c14n(node, algorithm, transform=None):
    """Canonical octets of `node` (an element in its document, or a whole
    tree) with lxml.  Comments never count: same-document references
    (URI="" and "#id") select node-sets without comments."""
    exclusive, _ = C14N_METHODS[algorithm]
    prefixes = None
    if exclusive and transform is not None:
        inclusive = transform.find(_qn(EXC_C14N, 'InclusiveNamespaces'))
        if inclusive is not None:
            prefixes = (inclusive.get('PrefixList') or '').split()
    return etree.tostring(node, method='c14n', exclusive=exclusive,
        with_comments=False, inclusive_ns_prefixes=prefixes)


def _canonicalization_of(signed_info):
    method = _only(signed_info, NS_DS, 'CanonicalizationMethod',
        "CanonicalizationMethod")
    algorithm = method.get('Algorithm')
    if algorithm not in C14N_METHODS:
        raise SignatureError('xades_unsupported',
            reason="canonicalization %s" % algorithm)
    exclusive, with_comments = C14N_METHODS[algorithm]
    prefixes = None
    inclusive = method.find(_qn(EXC_C14N, 'InclusiveNamespaces'))
    if exclusive and inclusive is not None:
        prefixes = (inclusive.get('PrefixList') or '').split()
    # SignedInfo is an element of the document: its comments are kept
    # under a #WithComments method.
    return etree.tostring(signed_info, method='c14n', exclusive=exclusive,
        with_comments=with_comments, inclusive_ns_prefixes=prefixes)


def _reference_parts(reference):
    "(transform algorithms, transform elements, digest hash, digest bytes)"
    transforms = reference.find(_qn(NS_DS, 'Transforms'))
    elements = [] if transforms is None else list(transforms)
    for element in elements:
        if element.tag != _qn(NS_DS, 'Transform'):
            raise _malformed("unexpected element in Transforms")
    algorithms = [t.get('Algorithm') for t in elements]
    digest_method = _only(reference, NS_DS, 'DigestMethod', "DigestMethod")
    hash_ = DIGEST_METHODS.get(digest_method.get('Algorithm'))
    if hash_ is None:
        raise SignatureError('xades_unsupported',
            reason="digest %s" % digest_method.get('Algorithm'))
    digest_value = _only(reference, NS_DS, 'DigestValue', "DigestValue")
    return algorithms, elements, hash_, _b64(digest_value.text)


def _b64(text):
    try:
        return base64.b64decode(''.join((text or '').split()), validate=True)
    except (binascii.Error, ValueError):
        raise _malformed("invalid Base64 value") from None


def _digest(hash_, data):
    h = hashes.Hash(hash_())
    h.update(data)
    return h.finalize()


def _is_signature_filter(transform):
    """Whether `transform` is the XPath filter KSeF allows,
    ``not(ancestor-or-self::ds:Signature)`` (any prefix bound to the
    XMLDSig namespace, any spacing).  Over a whole document it selects
    every node but the signature's: exactly what the enveloped-signature
    transform removes, so both are verified the same way."""
    if transform.get('Algorithm') != XPATH_FILTER:
        return False
    children = [c for c in transform if isinstance(c.tag, str)]
    if len(children) != 1 or children[0].tag != _qn(NS_DS, 'XPath'):
        return False
    expression = ''.join((children[0].text or '').split())
    match = _SIGNATURE_FILTER.fullmatch(expression)
    return bool(match) and children[0].nsmap.get(match.group(1)) == NS_DS


def _c14n_transform(algorithms, elements, allow_enveloped):
    """Check a reference's transform chain and return (c14n algorithm,
    its Transform element or None).  Only what KSeF allows, in the forms
    an enveloped signature uses: [enveloped-signature, or the XPath filter
    ``not(ancestor-or-self::ds:Signature)``] then at most one
    canonicalization."""
    chain = list(algorithms)
    if allow_enveloped:
        if not chain or not (chain[0] == ENVELOPED
                or _is_signature_filter(elements[0])):
            raise SignatureError('xades_unsupported',
                reason="the document reference must use the "
                "enveloped-signature transform (or the XPath filter "
                "not(ancestor-or-self::ds:Signature))")
        chain = chain[1:]
        elements = elements[1:]
    if not chain:
        return C14N_10, None
    if len(chain) == 1 and chain[0] in C14N_METHODS:
        return chain[0], elements[0]
    raise SignatureError('xades_unsupported',
        reason="transforms %s" % ' '.join(str(a) for a in algorithms))


def _verify_signature_value(certificate, method, signed_info_c14n, value):
    kind, hash_ = SIGNATURE_METHODS[method]
    key = certificate.public_key()
    try:
        if kind in ('rsa', 'rsa-pss'):
            if not isinstance(key, rsa.RSAPublicKey):
                return False
            if key.key_size < MIN_RSA_BITS:
                raise SignatureError('xades_invalid_certificate',
                    reason="RSA key shorter than %d bits" % MIN_RSA_BITS)
            if kind == 'rsa':
                pad = padding.PKCS1v15()
            else:
                # RFC 9231 2.3.10: MGF1 with the same hash; the salt
                # length may be set in RSAPSSParams, so any is taken.
                pad = padding.PSS(mgf=padding.MGF1(hash_()),
                    salt_length=padding.PSS.AUTO)
            key.verify(value, signed_info_c14n, pad, hash_())
        else:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                return False
            if key.key_size < MIN_EC_BITS:
                raise SignatureError('xades_invalid_certificate',
                    reason="EC key shorter than %d bits" % MIN_EC_BITS)
            # XMLDSig 1.1: R||S, each of the curve's byte length; never DER.
            size = (key.key_size + 7) // 8
            if len(value) != 2 * size:
                return False
            r = int.from_bytes(value[:size], 'big')
            s = int.from_bytes(value[size:], 'big')
            key.verify(utils.encode_dss_signature(r, s), signed_info_c14n,
                ec.ECDSA(hash_()))
    except cryptography.exceptions.InvalidSignature:
        return False
    return True


def _remove_keeping_tail(element):
    parent = element.getparent()
    if element.tail:
        previous = element.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or '') + element.tail
        else:
            parent.text = (parent.text or '') + element.tail
    parent.remove(element)


def _text(root, ns, path):
    element = root.find('/'.join(_qn(ns, p) for p in path))
    return None if element is None else (element.text or '')


def _parse_time(text):
    if not text:
        return None
    try:
        value = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value


def _is_auth_request(element):
    return (isinstance(element.tag, str)
        and etree.QName(element).localname == 'AuthTokenRequest'
        and etree.QName(element).namespace in AUTH_NAMESPACES)


def _enveloped_request(target, signature):
    """The AuthTokenRequest of an enveloping signature: the only element
    of `target`, a ds:Object child of `signature`; None otherwise."""
    if (target is None or target.tag != _qn(NS_DS, 'Object')
            or target.getparent() is not signature):
        return None
    children = [c for c in target if isinstance(c.tag, str)]
    if len(children) != 1 or not _is_auth_request(children[0]):
        return None
    return children[0]


def verify(xml, now=None):
    """Verify a signed ``AuthTokenRequest`` as KSeF does and return a
    :class:`VerifiedRequest`; raise :class:`SignatureError` otherwise.

    Checks: readable XML without DOCTYPE; exactly one ``ds:Signature``,
    a child of the root (enveloped) or the root itself (enveloping);
    accepted algorithms; the signature value against the embedded
    certificate; one reference covering the request: ``URI=""`` with the
    enveloped-signature transform (or KSeF's XPath filter) over the whole
    document, or, enveloping, ``#id`` of the ds:Object of the signature
    whose only element is the AuthTokenRequest; one reference of type
    SignedProperties to the ``xades:SignedProperties``
    of this signature, digest included; that SigningCertificate (or V2)
    holds the digest of the embedded certificate; the certificate valid at
    `now` (default now; naive means UTC); the signed content valid against
    the auth XSD.  Ids must be unique in the document (a duplicate Id is
    the usual lever of signature wrapping).
    """
    if now is None:
        now = datetime.datetime.now(datetime.timezone.utc)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=datetime.timezone.utc)
    try:
        root = xmlutil.parse(xml)
        # An independent copy for the enveloped-signature transform.
        document = xmlutil.parse(xml).getroottree()
    except (xmlutil.XMLError, TypeError) as exc:
        raise SignatureError('xades_unreadable', reason=str(exc)) from None
    # KSeF takes enveloped (the signature in AuthTokenRequest) and
    # enveloping (AuthTokenRequest in a ds:Object of the signature)
    # signatures; detached ones are refused.
    enveloping = root.tag == _qn(NS_DS, 'Signature')
    if not enveloping and not _is_auth_request(root):
        raise _malformed("the root element is not AuthTokenRequest")

    signatures = list(root.iter(_qn(NS_DS, 'Signature')))
    if not signatures:
        raise SignatureError('xades_no_signature')
    if len(signatures) > 1:
        raise SignatureError('xades_too_many_signatures',
            count=len(signatures))
    signature, = signatures
    if not enveloping and signature.getparent() is not root:
        raise SignatureError('xades_unsupported',
            reason="only an enveloped signature in the root element or an "
            "enveloping one is accepted")

    ids = {}
    for element in root.iter(etree.Element):
        for name, value in element.attrib.items():
            if etree.QName(name).localname in ('Id', 'ID', 'id'):
                if value in ids:
                    raise _malformed("duplicate Id %r" % value)
                ids[value] = element

    children = [c for c in signature if isinstance(c.tag, str)]
    if (len(children) < 2 or children[0].tag != _qn(NS_DS, 'SignedInfo')
            or children[1].tag != _qn(NS_DS, 'SignatureValue')):
        raise _malformed("Signature must start with SignedInfo and "
            "SignatureValue")
    signed_info, signature_value = children[:2]
    signed_info_c14n = _canonicalization_of(signed_info)
    method_element = _only(signed_info, NS_DS, 'SignatureMethod',
        "SignatureMethod")
    method = method_element.get('Algorithm')
    if method not in SIGNATURE_METHODS:
        raise SignatureError('xades_unsupported',
            reason="signature method %s" % method)
    value = _b64(signature_value.text)

    # The signing certificate: KeyInfo/X509Data/X509Certificate.
    key_info = signature.find(_qn(NS_DS, 'KeyInfo'))
    certificates = [] if key_info is None else [
        _b64(c.text) for c in key_info.iterfind(
            '%s/%s' % (_qn(NS_DS, 'X509Data'), _qn(NS_DS, 'X509Certificate')))]
    if not certificates:
        raise SignatureError('xades_invalid_certificate',
            reason="no X509Certificate in KeyInfo")
    signer_der = None
    for cert_der in certificates:
        try:
            certificate = _load_certificate(cert_der)
        except ValueError as exc:
            raise SignatureError('xades_invalid_certificate',
                reason=str(exc)) from None
        if _verify_signature_value(certificate, method, signed_info_c14n,
                value):
            signer_der = cert_der
            break
    if signer_der is None:
        raise SignatureError('xades_bad_signature_value')

    # References (only those of the verified SignedInfo are considered).
    document_refs, properties_refs, other_refs = [], [], []
    for reference in signed_info.iterfind(_qn(NS_DS, 'Reference')):
        uri = reference.get('URI')
        if uri == '' and not enveloping:
            document_refs.append(reference)
        elif uri is None or not uri.startswith('#'):
            raise SignatureError('xades_unsupported',
                reason="reference URI %r (detached signatures are not "
                "accepted)" % uri)
        elif reference.get('Type') == SIGNED_PROPERTIES_TYPE:
            properties_refs.append(reference)
        elif enveloping and _enveloped_request(ids.get(uri[1:]),
                signature) is not None:
            document_refs.append(reference)
        else:
            other_refs.append(reference)
    if len(document_refs) != 1:
        raise SignatureError('xades_unsupported',
            reason="exactly one reference must cover the whole document "
            "(URI=\"\", or the ds:Object holding AuthTokenRequest in an "
            "enveloping signature)")
    if len(properties_refs) != 1:
        raise _malformed("exactly one reference to SignedProperties "
            "is required")

    algorithms, elements, hash_, expected = _reference_parts(
        document_refs[0])
    if enveloping:
        # 1. The ds:Object holding the request; the request's own octets
        # are what the caller gets.
        target = ids[document_refs[0].get('URI')[1:]]
        algorithm, transform = _c14n_transform(algorithms, elements, False)
        if _digest(hash_, _c14n(target, algorithm, transform)) != expected:
            raise SignatureError('xades_bad_digest')
        signed_octets = _c14n(_enveloped_request(target, signature),
            algorithm, transform)
    else:
        # 1. The whole document minus the signature.
        algorithm, transform = _c14n_transform(algorithms, elements, True)
        copied = document.getroot()
        _remove_keeping_tail(copied.find(_qn(NS_DS, 'Signature')))
        signed_octets = _c14n(document, algorithm, transform)
        if _digest(hash_, signed_octets) != expected:
            raise SignatureError('xades_bad_digest')

    # 2. SignedProperties of this very signature.
    reference = properties_refs[0]
    target = signed_properties = ids.get(reference.get('URI')[1:])
    signature_id = signature.get('Id')
    if (target is None or target.tag != _qn(NS_XADES, 'SignedProperties')
            or target.getparent() is None
            or target.getparent().tag != _qn(NS_XADES,
                'QualifyingProperties')
            or target.getparent().getparent() is None
            or target.getparent().getparent().getparent() is not signature
            or target.getparent().getparent().tag != _qn(NS_DS, 'Object')):
        raise _malformed("the SignedProperties reference does not point to "
            "the xades:SignedProperties of the signature")
    if (not signature_id
            or target.getparent().get('Target') != '#' + signature_id):
        raise _malformed("QualifyingProperties does not target the "
            "signature")
    algorithms, elements, hash_, expected = _reference_parts(reference)
    algorithm, transform = _c14n_transform(algorithms, elements, False)
    if _digest(hash_, _c14n(target, algorithm, transform)) != expected:
        raise SignatureError('xades_signed_properties_mismatch')

    # 3. Other references (e.g. KeyInfo) must stay inside the signature.
    for reference in other_refs:
        target = ids.get(reference.get('URI')[1:])
        if target is None or signature not in target.iterancestors():
            raise SignatureError('xades_unsupported',
                reason="reference %s outside the signature"
                % reference.get('URI'))
        algorithms, elements, hash_, expected = _reference_parts(reference)
        algorithm, transform = _c14n_transform(algorithms, elements, False)
        if _digest(hash_, _c14n(target, algorithm, transform)) != expected:
            raise SignatureError('xades_bad_digest')

    # 4. The signed signing certificate is the embedded one.
    signature_properties = _only(signed_properties, NS_XADES,
        'SignedSignatureProperties', "SignedSignatureProperties")
    cert_refs = (signature_properties.findall(
            _qn(NS_XADES, 'SigningCertificate'))
        + signature_properties.findall(
            _qn(NS_XADES, 'SigningCertificateV2')))
    if len(cert_refs) != 1:
        raise _malformed("expected exactly one SigningCertificate or "
            "SigningCertificateV2")
    matched = False
    for cert in cert_refs[0].findall(_qn(NS_XADES, 'Cert')):
        cert_digest = _only(cert, NS_XADES, 'CertDigest', "CertDigest")
        digest_method = _only(cert_digest, NS_DS, 'DigestMethod',
            "DigestMethod").get('Algorithm')
        hash_ = DIGEST_METHODS.get(digest_method)
        if hash_ is None:
            raise SignatureError('xades_unsupported',
                reason="certificate digest %s" % digest_method)
        digest_value = _b64(_only(cert_digest, NS_DS, 'DigestValue',
            "DigestValue").text)
        if _digest(hash_, signer_der) == digest_value:
            matched = True
            break
    if not matched:
        raise SignatureError('xades_signing_certificate_mismatch')
    signing_time = _parse_time(_text(signed_properties, NS_XADES,
        ('SignedSignatureProperties', 'SigningTime')))

    certificate = _load_certificate(signer_der)
    if not (certificate.not_valid_before_utc <= now
            <= certificate.not_valid_after_utc):
        raise SignatureError('xades_invalid_certificate',
            reason="not valid at %s" % now.isoformat())

    return _verified_request(signed_octets, signer_der, signing_time, method)


def _verified_request(signed_octets, cert_der, signing_time, method):
    signed = xmlutil.parse(signed_octets)
    namespace = etree.QName(signed).namespace
    checked = signed
    if namespace == NS_AUTH_20:
        # The 2.0 XSD does not compile (its IP patterns are not XSD
        # regular expressions); its structure is that of 2.1, so the 2.1
        # schema checks a copy moved to the 2.1 namespace.
        checked = copy.deepcopy(signed)
        for element in checked.iter(etree.Element):
            if etree.QName(element).namespace == NS_AUTH_20:
                element.tag = _qn(NS_AUTH, etree.QName(element).localname)
        etree.cleanup_namespaces(checked)
    errors = xmlutil.schema_errors('auth', checked)
    if errors:
        raise SignatureError('xades_schema_invalid',
            errors='; '.join(message for _, _, message in errors))

    identifier = signed.find(_qn(namespace, 'ContextIdentifier'))[0]
    context = (_CONTEXT_ELEMENTS[etree.QName(identifier).localname],
        identifier.text)
    allowed_ips = None
    ips = signed.find('%s/%s' % (_qn(namespace, 'AuthorizationPolicy'),
        _qn(namespace, 'AllowedIps')))
    if ips is not None:
        allowed_ips = {key: tuple(e.text for e in ips.iterfind(
                    _qn(namespace, tag)))
            for key, tag in _ALLOWED_IPS}
    return VerifiedRequest(
        root=signed,
        certificate_der=cert_der,
        challenge=_text(signed, namespace, ('Challenge',)),
        context=context,
        subject_identifier_type=_text(signed, namespace,
            ('SubjectIdentifierType',)),
        allowed_ips=allowed_ips,
        signing_time=signing_time,
        signature_method=method,
        namespace=namespace,
        )
