# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Cryptography used by KSeF sessions (PROTOCOL.md §6).

AES-256-CBC with PKCS#7 padding for invoices and batch parts, the AES key
wrapped for the Ministry's public key with RSA-OAEP (SHA-256, MGF1-SHA-256),
and SHA-256 digests in Base64 as KSeF writes them.
"""
import base64
import hashlib
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

AES_KEY_SIZE = 32
AES_BLOCK_SIZE = 16


def sha256_b64(data):
    "Base64 (standard, padded) of the SHA-256 of `data`: KSeF's hash form."
    return base64.b64encode(hashlib.sha256(data).digest()).decode('ascii')


def b64(data):
    return base64.b64encode(data).decode('ascii')


def b64decode(text):
    return base64.b64decode(text, validate=True)


@dataclass(frozen=True)
class SymmetricKey:
    "The AES-256 key and IV of one session (or one export)."
    key: bytes
    iv: bytes

    def __repr__(self):
        # Never show key material, e.g. in a traceback or a log line.
        return 'SymmetricKey(<hidden>)'

    @classmethod
    def generate(cls):
        return cls(os.urandom(AES_KEY_SIZE), os.urandom(AES_BLOCK_SIZE))

    def encrypt(self, data):
        padder = padding.PKCS7(AES_BLOCK_SIZE * 8).padder()
        padded = padder.update(data) + padder.finalize()
        encryptor = self._cipher().encryptor()
        return encryptor.update(padded) + encryptor.finalize()

    def decrypt(self, data):
        "Decrypt; raises ValueError on a wrong key or corrupted data."
        if len(data) % AES_BLOCK_SIZE:
            raise ValueError("ciphertext is not a whole number of blocks")
        decryptor = self._cipher().decryptor()
        padded = decryptor.update(data) + decryptor.finalize()
        unpadder = padding.PKCS7(AES_BLOCK_SIZE * 8).unpadder()
        return unpadder.update(padded) + unpadder.finalize()

    def encryptor(self):
        """Return a streaming encryptor: ``update(chunk)`` then
        ``finalize()``, for batch parts that must not sit in memory."""
        return _StreamEncryptor(self._cipher().encryptor())

    def _cipher(self):
        return Cipher(algorithms.AES(self.key), modes.CBC(self.iv))


class _StreamEncryptor:
    def __init__(self, encryptor):
        self._encryptor = encryptor
        self._padder = padding.PKCS7(AES_BLOCK_SIZE * 8).padder()

    def update(self, data):
        return self._encryptor.update(self._padder.update(data))

    def finalize(self):
        return (self._encryptor.update(self._padder.finalize())
            + self._encryptor.finalize())


def encrypted_size(plain_size):
    "Size of AES-CBC/PKCS#7 ciphertext for `plain_size` bytes."
    return (plain_size // AES_BLOCK_SIZE + 1) * AES_BLOCK_SIZE


OAEP = asym_padding.OAEP(
    mgf=asym_padding.MGF1(algorithm=hashes.SHA256()),
    algorithm=hashes.SHA256(), label=None)


def rsa_oaep_encrypt(public_key, data):
    "RSA-OAEP SHA-256 / MGF1-SHA-256, as KSeF requires for keys and tokens."
    return public_key.encrypt(data, OAEP)


def rsa_oaep_decrypt(private_key, data):
    return private_key.decrypt(data, OAEP)
