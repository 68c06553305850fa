# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Encryption at rest of private keys (and other secrets) with a secret
configured by the administrator.

The Tryton layer reads the secret from ``trytond.conf`` (``[ksef]
secret_key``) or the environment (``TRYTOND_KSEF__SECRET_KEY``) and passes
it in; nothing here reads configuration.

Blob format, version 1 (all lengths fixed)::

    b'KS' | 0x01 | salt (16) | check (16) | nonce (12) | AES-256-GCM
    ciphertext + tag (16)

* The AES key and a check value are derived from the secret with
  HKDF-SHA256 and a random per-blob salt.  HKDF, not scrypt: the secret is
  meant to be machine-generated (`generate_secret`) and is required to be
  long (`MIN_SECRET_LENGTH`), so stretching it adds nothing but a delay on
  every decryption (every signature); the length check is what keeps
  brute force out of reach.
* The check value lets a wrong secret be reported as such
  ('secret_key_mismatch') rather than as a damaged blob.  It is derived
  independently of the encryption key and reveals nothing about it.
* The header and `context` are authenticated as associated data: the
  Tryton layer binds each blob to the certificate's fingerprint, so a blob
  moved to another record fails ('secret_blob_invalid'), as does any
  modified byte.
"""
import base64
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ['MIN_SECRET_LENGTH', 'SecretError', 'check_secret',
    'generate_secret', 'encrypt', 'decrypt']

MIN_SECRET_LENGTH = 32
# A secret made of few distinct characters ('aaaa...', '0101...') is not a
# secret whatever its length.
MIN_DISTINCT_CHARACTERS = 8

MAGIC = b'KS'
VERSION = 1
_SALT = 16
_CHECK = 16
_NONCE = 12
_TAG = 16
_HEADER = len(MAGIC) + 1 + _SALT + _CHECK + _NONCE

_MESSAGES = {
    'secret_key_weak': (
        "The KSeF secret key ([ksef] secret_key) is missing or too weak: it "
        "needs at least {minimum} characters of varied, random content."),
    'secret_key_mismatch': (
        "The KSeF secret key ([ksef] secret_key) is not the one the data "
        "was encrypted with."),
    'secret_blob_invalid': (
        "The encrypted data is damaged or belongs to another record."),
    }


class SecretError(Exception):
    """A secret key or an encrypted blob that cannot be used.

    `code` is stable (message ``ksef.msg_<code>``), `params` fill it; the
    secret never appears in it.
    """

    def __init__(self, code, **params):
        self.code = code
        self.params = params
        super().__init__(_MESSAGES[code].format(**params))


def generate_secret():
    "A new random secret (43 URL-safe characters: 256 bits)."
    return base64.urlsafe_b64encode(os.urandom(32)).rstrip(b'=').decode(
        'ascii')


def check_secret(secret):
    "Raise SecretError('secret_key_weak') unless `secret` is good enough."
    if (not isinstance(secret, str)
            or len(secret) < MIN_SECRET_LENGTH
            or len(set(secret)) < MIN_DISTINCT_CHARACTERS):
        raise SecretError('secret_key_weak', minimum=MIN_SECRET_LENGTH)


def _derive(secret, salt):
    "(AES key, check value) for `secret` and a blob's `salt`."
    material = HKDF(
        algorithm=hashes.SHA256(), length=32 + _CHECK, salt=salt,
        info=b'trytond_ksef secrets v1',
        ).derive(secret.encode('utf-8'))
    return material[:32], material[32:]


def _context(context):
    if not isinstance(context, (bytes, bytearray, memoryview)):
        raise TypeError("context must be bytes")
    return bytes(context)


def encrypt(secret, data, context=b''):
    "Encrypt `data` (bytes) under `secret`, bound to `context`."
    check_secret(secret)
    context = _context(context)
    salt = os.urandom(_SALT)
    nonce = os.urandom(_NONCE)
    key, check = _derive(secret, salt)
    header = MAGIC + bytes([VERSION]) + salt + check + nonce
    return header + AESGCM(key).encrypt(nonce, bytes(data), header + context)


def decrypt(secret, blob, context=b''):
    """The data `encrypt` was given; raises SecretError: 'secret_key_weak',
    'secret_key_mismatch' (another secret) or 'secret_blob_invalid'
    (damaged, unknown version or another `context`)."""
    check_secret(secret)
    context = _context(context)
    blob = bytes(blob)
    if (len(blob) < _HEADER + _TAG or blob[:len(MAGIC)] != MAGIC
            or blob[len(MAGIC)] != VERSION):
        raise SecretError('secret_blob_invalid')
    start = len(MAGIC) + 1
    salt = blob[start:start + _SALT]
    check = blob[start + _SALT:start + _SALT + _CHECK]
    nonce = blob[_HEADER - _NONCE:_HEADER]
    key, expected = _derive(secret, salt)
    if not hmac.compare_digest(check, expected):
        raise SecretError('secret_key_mismatch')
    try:
        return AESGCM(key).decrypt(
            nonce, blob[_HEADER:], blob[:_HEADER] + context)
    except InvalidTag:
        raise SecretError('secret_blob_invalid') from None
