# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Verification links and QR codes printed on invoices (PROTOCOL.md §14).

CODE I (every invoice) lets anyone check the invoice in KSeF::

    {qr}/invoice/{sellerNip}/{P_1 as DD-MM-YYYY}/{Base64URL(SHA-256)}

CODE II (offline invoices only) proves who issued it: the link names the
login context, the seller and the serial number of the issuer's Offline
KSeF certificate, and ends with a signature made with that certificate's
private key over the link without its ``https://`` prefix::

    {qr}/certificate/{ctxType}/{ctxValue}/{sellerNip}/{serial}/{hash}/{sig}

Base64URL is always written without padding.  `png` draws a link as a QR
code with its label underneath (the KSeF number, ``OFFLINE`` or
``CERTYFIKAT``).
"""
import base64
import binascii
import datetime
import hashlib
import io
import re
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

CONTEXT_TYPES = ('Nip', 'InternalId', 'NipVatUe', 'PeppolId')
LABEL_OFFLINE = 'OFFLINE'
LABEL_CERTIFICATE = 'CERTYFIKAT'

RSA_MIN_BITS = 2048
PSS_SALT_LENGTH = 32
EC_COORDINATE_SIZE = 32

# Drawing.  The documentation requires only ISO/IEC 18004 symbols and says
# nothing about size or error correction (PROTOCOL.md §14, §20 point 7);
# these choices are ours:
# - error correction M (15 %): a printed, possibly folded or stamped,
#   invoice needs some redundancy, while H would make the 470-character
#   RSA CODE II link a very dense symbol;
# - the quiet zone of 4 modules that ISO/IEC 18004 asks for (the Java
#   reference client uses 1);
# - 8 pixels a module and 400 dpi recorded in the PNG, i.e. modules of
#   about 0.5 mm when printed at the natural size: CODE I is then about
#   2.5 cm wide, an RSA CODE II about 5 cm;
# - the label in the Pillow default font, 3 modules high, below the quiet
#   zone so that it never disturbs the scan.
MODULE_PIXELS = 8
QUIET_ZONE = 4
DPI = 400
LABEL_MODULES = 3

# The API's patterns (open-api.json, components.schemas Nip, InternalId,
# NipVatUe, PeppolId); a test compares them with the packaged file.
IDENTIFIER_PATTERNS = {
    'Nip': r'^[1-9]((\d[1-9])|([1-9]\d))\d{7}$',
    'InternalId': r'^[1-9]((\d[1-9])|([1-9]\d))\d{7}-\d{5}$',
    'NipVatUe': (
        r'^[1-9]((\d[1-9])|([1-9]\d))\d{7}-('
        r'ATU\d{8}|BE[01]{1}\d{9}|BG\d{9,10}|CY\d{8}[A-Z]|CZ\d{8,10}'
        r'|DE\d{9}|DK\d{8}|EE\d{9}|EL\d{9}'
        r'|ES([A-Z]\d{8}|\d{8}[A-Z]|[A-Z]\d{7}[A-Z])|FI\d{8}'
        r'|FR[A-Z0-9]{2}\d{9}|HR\d{11}|HU\d{8}'
        r'|IE(\d{7}[A-Z]{2}|\d[A-Z0-9+*]\d{5}[A-Z])|IT\d{11}'
        r'|LT(\d{9}|\d{12})|LU\d{8}|LV\d{11}|MT\d{8}|NL[A-Z0-9+*]{12}'
        r'|PT\d{9}|RO\d{2,10}|SE\d{12}|SI\d{8}|SK\d{10}'
        r'|XI((\d{9}|\d{12})|(GD|HA)\d{3}))$'),
    'PeppolId': r'^P[A-Z]{2}[0-9]{6}$',
    }
_PATTERNS = {name: re.compile(pattern, re.ASCII)
    for name, pattern in IDENTIFIER_PATTERNS.items()}
_SCHEME = re.compile(r'[A-Za-z][A-Za-z0-9+.-]*://')
_SERIAL = re.compile(r'[0-9A-F]+', re.ASCII)
_B64URL = re.compile(r'[A-Za-z0-9_-]+', re.ASCII)


class QRError(ValueError):
    "Bad data for a verification link, or no QR code found in an image."

    def __init__(self, code, message, **params):
        super().__init__(message)
        self.code = code
        self.params = params


def _check_nip(nip):
    nip = str(nip)
    if not _PATTERNS['Nip'].fullmatch(nip):
        raise QRError(
            'qr_invalid_nip', "the seller NIP must be 10 digits",
            nip=nip)
    return nip


def _check_base(qr_base_url):
    base = str(qr_base_url).strip().rstrip('/')
    scheme = _SCHEME.match(base)
    if not scheme or scheme.end() == len(base):
        raise QRError(
            'qr_invalid_base_url',
            "the QR base URL must be absolute, e.g. "
            "https://qr.ksef.mf.gov.pl", url=base)
    return base


def b64url(data):
    "Base64URL without padding, as the verification links write it."
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode('ascii')


def b64url_decode(text):
    "Decode Base64URL with or without padding; raise ValueError."
    text = text.rstrip('=')
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not Base64URL")
    return base64.urlsafe_b64decode(text + '=' * (-len(text) % 4))


def _digest(invoice_hash):
    """Return the 32-byte SHA-256 given raw, as KSeF's Base64 text or as
    Base64URL text."""
    digest = None
    if isinstance(invoice_hash, (bytes, bytearray)):
        if len(invoice_hash) == hashlib.sha256().digest_size:
            digest = bytes(invoice_hash)
    elif isinstance(invoice_hash, str):
        text = invoice_hash.strip()
        try:
            digest = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            try:
                digest = b64url_decode(text)
            except (binascii.Error, ValueError):
                digest = None
    if digest is None or len(digest) != hashlib.sha256().digest_size:
        raise QRError(
            'qr_invalid_invoice_hash',
            "the invoice hash must be a SHA-256 digest (32 bytes, or its "
            "Base64 text)")
    return digest


def code1_link(qr_base_url, seller_nip, issue_date, invoice_hash):
    """CODE I link of an invoice.

    `seller_nip` is the NIP of Podmiot1, `issue_date` the date P_1 and
    `invoice_hash` the SHA-256 of the invoice file exactly as sent to KSeF
    (raw 32 bytes or Base64 text, e.g. KSeF's ``invoiceHash``).
    """
    base = _check_base(qr_base_url)
    nip = _check_nip(seller_nip)
    if not isinstance(issue_date, datetime.date):
        raise TypeError("issue_date must be a date")
    return '%s/invoice/%s/%s/%s' % (
        base, nip, issue_date.strftime('%d-%m-%Y'),
        b64url(_digest(invoice_hash)))


def certificate_serial(serial):
    """Normalise a certificate serial number to KSeF's uppercase hex form.

    An int (``x509.Certificate.serial_number``) is written with at least
    16 digits, as ``certificateSerialNumber`` is (e.g. 01F20A5D352AE590).
    """
    if isinstance(serial, int) and not isinstance(serial, bool):
        if serial < 0:
            raise QRError(
                'qr_invalid_certificate_serial',
                "a certificate serial number cannot be negative",
                serial=str(serial))
        return '%016X' % serial
    text = str(serial).strip().upper()
    if not _SERIAL.fullmatch(text):
        raise QRError(
            'qr_invalid_certificate_serial',
            "the certificate serial number must be hexadecimal",
            serial=str(serial))
    return text


def code2_unsigned_link(qr_base_url, context_type, context_value,
        seller_nip, cert_serial_hex, invoice_hash):
    "The CODE II link up to, without, the signature segment."
    base = _check_base(qr_base_url)
    if context_type not in CONTEXT_TYPES:
        raise QRError(
            'qr_invalid_context_type',
            "the context type must be one of %s" % ', '.join(CONTEXT_TYPES),
            context_type=str(context_type))
    context_value = str(context_value)
    if not _PATTERNS[context_type].fullmatch(context_value):
        raise QRError(
            'qr_invalid_context_value',
            "%r is not a valid %s identifier" % (
                context_value, context_type),
            context_type=context_type, context_value=context_value)
    nip = _check_nip(seller_nip)
    serial = certificate_serial(cert_serial_hex)
    return '%s/certificate/%s/%s/%s/%s/%s' % (
        base, context_type, context_value, nip, serial,
        b64url(_digest(invoice_hash)))


def signed_data(unsigned_link):
    """The bytes CODE II signs: the link without its ``https://`` (any
    scheme, for a loopback simulator) and without a trailing slash."""
    text = unsigned_link.rstrip('/')
    match = _SCHEME.match(text)
    if match:
        text = text[match.end():]
    return text.encode('utf-8')


def sign(data, private_key):
    """Sign CODE II data with the Offline certificate's private key.

    RSA (at least 2048 bits): RSASSA-PSS, SHA-256, MGF1-SHA-256, salt of
    32 bytes.  EC: P-256 ECDSA with SHA-256, the signature written as
    IEEE P1363 r||s (32 + 32 bytes), the form the documentation
    recommends over DER.
    """
    if isinstance(private_key, rsa.RSAPrivateKey):
        if private_key.key_size < RSA_MIN_BITS:
            raise QRError(
                'qr_unsupported_key',
                "an RSA key for CODE II needs at least %d bits"
                % RSA_MIN_BITS, key_size=private_key.key_size)
        return private_key.sign(data, _pss(), hashes.SHA256())
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise QRError(
                'qr_unsupported_key',
                "an EC key for CODE II must be on curve P-256",
                curve=private_key.curve.name)
        r, s = utils.decode_dss_signature(
            private_key.sign(data, ec.ECDSA(hashes.SHA256())))
        return (r.to_bytes(EC_COORDINATE_SIZE, 'big')
            + s.to_bytes(EC_COORDINATE_SIZE, 'big'))
    raise QRError(
        'qr_unsupported_key',
        "the key of an Offline certificate must be RSA or EC P-256",
        key_type=type(private_key).__name__)


def _pss():
    return padding.PSS(
        mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_LENGTH)


def code2_link(qr_base_url, context_type, context_value, seller_nip,
        cert_serial_hex, invoice_hash, private_key):
    """CODE II link of an offline invoice, signed with `private_key`.

    `context_type` is the login context type ('Nip', 'InternalId',
    'NipVatUe' or 'PeppolId', exact case) and `context_value` its value;
    `cert_serial_hex` is the serial of the issuer's Offline KSeF
    certificate (hex text or int).  ECDSA and PSS signatures are
    randomised: the same input gives a different, equally valid, link.
    """
    unsigned = code2_unsigned_link(
        qr_base_url, context_type, context_value, seller_nip,
        cert_serial_hex, invoice_hash)
    signature = sign(signed_data(unsigned), private_key)
    return '%s/%s' % (unsigned, b64url(signature))


def verify_code2_link(link, public_key):
    """Tell whether the signature of CODE II `link` is valid for
    `public_key` (a public key, or a certificate or private key from which
    it is taken).

    Accepts RSA-PSS (salt 32) and, for EC P-256, both P1363 and DER
    signatures, since the documentation allows DER where P1363 is
    impossible.
    """
    if not isinstance(public_key, (
            rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        public_key = public_key.public_key()
    unsigned, _, signature = str(link).rpartition('/')
    if not unsigned or '/certificate/' not in unsigned:
        return False
    try:
        signature = b64url_decode(signature)
    except (binascii.Error, ValueError):
        return False
    data = signed_data(unsigned)
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, _pss(), hashes.SHA256())
            return True
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            if not isinstance(public_key.curve, ec.SECP256R1):
                return False
            if len(signature) == 2 * EC_COORDINATE_SIZE:
                signature = utils.encode_dss_signature(
                    int.from_bytes(signature[:EC_COORDINATE_SIZE], 'big'),
                    int.from_bytes(signature[EC_COORDINATE_SIZE:], 'big'))
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
            return True
    except (InvalidSignature, ValueError):
        return False
    return False


def png(link, label):
    """PNG image of `link` as a QR code with `label` centred underneath.

    `label` is the KSeF number, 'OFFLINE' for CODE I before a number is
    assigned, or 'CERTYFIKAT' for CODE II (PROTOCOL.md §14).  The same
    input always gives the same bytes.
    """
    import qrcode
    from PIL import Image

    if not isinstance(label, str) or not label.strip():
        raise QRError('qr_invalid_label', "a QR code needs a label")
    qr = qrcode.QRCode(
        version=None, error_correction=qrcode.constants.ERROR_CORRECT_M,
        box_size=1, border=QUIET_ZONE)
    qr.add_data(link)
    qr.make(fit=True)
    matrix = qr.get_matrix()
    size = len(matrix)
    pixels = bytes(0 if dark else 255 for row in matrix for dark in row)
    code = Image.frombytes('L', (size, size), pixels).resize(
        (size * MODULE_PIXELS, size * MODULE_PIXELS), Image.NEAREST)

    text = _render_label(label.strip(), LABEL_MODULES * MODULE_PIXELS)
    margin = QUIET_ZONE * MODULE_PIXELS
    width = max(code.width, text.width + 2 * margin)
    height = code.height + text.height + margin
    image = Image.new('L', (width, height), 255)
    image.paste(code, ((width - code.width) // 2, 0))
    image.paste(text, ((width - text.width) // 2, code.height))
    out = io.BytesIO()
    image.save(out, format='PNG', dpi=(DPI, DPI))
    return out.getvalue()


def _render_label(label, height):
    "Black text on white, cropped, in a font of `height` pixels."
    from PIL import Image, ImageDraw, ImageFont

    try:
        # Pillow >= 10.1 (with FreeType): the bundled scalable font.
        font = ImageFont.load_default(size=height)
    except TypeError:
        font = ImageFont.load_default()
    draw = ImageDraw.Draw(Image.new('L', (1, 1), 255))
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    text = Image.new('L', (right - left, bottom - top), 255)
    ImageDraw.Draw(text).text((-left, -top), label, font=font, fill=0)
    if text.height and text.height < height // 2:
        # A bitmap fallback font: enlarge it by whole pixels.
        factor = max(1, height // text.height)
        text = text.resize(
            (text.width * factor, text.height * factor), Image.NEAREST)
    return text


def decode_png(data):
    """Read back the text of the QR code in image `data` (test helper;
    needs zxing-cpp, a test dependency only)."""
    import zxingcpp
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    results = zxingcpp.read_barcodes(
        image.convert('L'), formats=zxingcpp.BarcodeFormat.QRCode)
    if not results:
        raise QRError('qr_not_found', "no QR code found in the image")
    return results[0].text


# Command line: trytond-ksef qr-link

def _iso_date(text):
    import argparse
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "%r is not a date YYYY-MM-DD" % text) from None


def configure_parser(parser):
    parser.add_argument(
        '--nip', required=True, help="seller NIP (Podmiot1)")
    parser.add_argument(
        '--date', required=True, type=_iso_date, metavar='YYYY-MM-DD',
        help="issue date of the invoice (P_1)")
    parser.add_argument(
        '--env', default='prod', type=str.lower,
        choices=('test', 'demo', 'prod'),
        help="KSeF environment whose QR address to use (default: prod)")
    parser.add_argument(
        '--qr-url', metavar='URL',
        help="QR base URL replacing the environment's one")
    parser.add_argument(
        'file', metavar='FILE',
        help="invoice XML file exactly as sent to KSeF")


def run(args):
    from .environments import EnvironmentConfigError, urls

    try:
        with open(args.file, 'rb') as file:
            digest = hashlib.sha256(file.read()).digest()
    except OSError as exc:
        print("trytond-ksef qr-link: cannot read %s: %s"
            % (args.file, exc.strerror), file=sys.stderr)
        return 1
    try:
        environment = urls(args.env, {'qr_url': args.qr_url})
        link = code1_link(environment.qr_url, args.nip, args.date, digest)
    except (QRError, EnvironmentConfigError) as exc:
        print("trytond-ksef qr-link: %s" % exc, file=sys.stderr)
        return 2
    print(link)
    return 0
