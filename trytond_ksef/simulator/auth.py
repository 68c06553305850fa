# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Checks of a XAdES-signed AuthTokenRequest (PROTOCOL.md §4.2) and of the
certificate that signed it, with KSeF's error codes.

The signature, the profile, the auth XSD and the certificate's validity
are checked by :func:`trytond_ksef.xades.verify`; this module adds the
character-encoding rule (21217) and maps the result onto the API's
spelling of context types.
"""
from dataclasses import dataclass

from trytond_ksef import certificates, xades

# KSeF's 400 codes of POST /auth/xades-signature (open-api).
DESCRIPTIONS = {
    21001: "Nieczytelna treść.",
    21111: "Nieprawidłowe wyzwanie autoryzacyjne.",
    21115: "Nieprawidłowy certyfikat.",
    21117: "Nieprawidłowy identyfikator podmiotu dla wskazanego typu "
        "kontekstu.",
    21217: "Nieprawidłowe kodowanie znaków.",
    21401: "Dokument nie jest zgodny ze schemą (xsd).",
    21406: "Konflikt podpisu i typu uwierzytelnienia.",
    9101: "Nieprawidłowy dokument.",
    9102: "Brak podpisu.",
    9103: "Przekroczona liczba dozwolonych podpisów.",
    9105: "Nieprawidłowy podpis.",
    }


class AuthRefused(Exception):
    "A request KSeF refuses with HTTP 400 and `ksef_code`."

    def __init__(self, ksef_code, details=None):
        self.ksef_code = ksef_code
        self.description = DESCRIPTIONS.get(ksef_code, "Błąd")
        self.details = list(details or [])
        super().__init__('%s %s' % (ksef_code, self.description))


@dataclass
class Verified:
    "The signed content of a verified request, in the API's spelling."
    certificate_der: bytes
    challenge: str
    context: tuple              # ('Nip', '5265877635')
    subject_identifier_type: str
    allowed_ips: dict           # {'addresses', 'ranges', 'masks'} or None


def check_encoding(data):
    "KSeF accepts UTF-8 only (21217)."
    body = data[3:] if data.startswith(b'\xef\xbb\xbf') else data
    try:
        body.decode('utf-8')
    except UnicodeDecodeError:
        raise AuthRefused(21217) from None
    head = body[:200].lower()
    if head.startswith(b'<?xml'):
        declaration = head.split(b'?>')[0]
        if b'encoding' in declaration and b'utf-8' not in declaration \
                and b'utf8' not in declaration:
            raise AuthRefused(21217)


def verify_request(data, now):
    """Verify a signed AuthTokenRequest; return a :class:`Verified`.

    Raises AuthRefused with KSeF's code (21001, 21115, 21217, 21401, 9101,
    9102, 9103, 9105)."""
    check_encoding(data)
    try:
        result = xades.verify(data, now=now)
    except xades.SignatureError as exc:
        raise AuthRefused(exc.ksef_code or 9105, [str(exc)]) from None
    context_type, context_value = result.context
    allowed = None
    if result.allowed_ips:
        allowed = {
            'addresses': list(result.allowed_ips.get('ip4_addresses', ())),
            'ranges': list(result.allowed_ips.get('ip4_ranges', ())),
            'masks': list(result.allowed_ips.get('ip4_masks', ())),
            }
        if not any(allowed.values()):
            allowed = None
    return Verified(result.certificate_der, result.challenge,
        (xades.CONTEXT_TYPES[context_type], context_value),
        result.subject_identifier_type, allowed)


def load_certificate(der):
    """The signing certificate as trytond_ksef.certificates reads it;
    unreadable → 21115."""
    try:
        return certificates.load_certificate(der)
    except certificates.CertificateError as exc:
        raise AuthRefused(21115, [str(exc)]) from None
