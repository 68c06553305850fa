# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import base64
import hashlib
import io
import unittest

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from trytond_ksef import crypto


class CryptoTestCase(unittest.TestCase):
    "AES-256-CBC/PKCS#7 and RSA-OAEP-SHA256 as KSeF uses them (§6)"

    @classmethod
    def setUpClass(cls):
        cls.rsa_key = rsa.generate_private_key(
            public_exponent=65537, key_size=2048)

    def test_sha256_b64(self):
        "KSeF's hash form: standard padded Base64, 44 characters"
        digest = crypto.sha256_b64(b'abc')
        self.assertEqual(digest,
            'ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=')
        self.assertEqual(len(digest), 44)

    def test_aes_round_trip_sizes(self):
        "Encrypt/decrypt round trip; ciphertext size as KSeF computes it"
        key = crypto.SymmetricKey.generate()
        self.assertEqual((len(key.key), len(key.iv)), (32, 16))
        for size in (0, 1, 15, 16, 17, 6480, 100000):
            data = bytes(range(256)) * (size // 256) + bytes(size % 256)
            encrypted = key.encrypt(data)
            self.assertEqual(len(encrypted), crypto.encrypted_size(size))
            self.assertEqual(key.decrypt(encrypted), data)
        # The digest example of PROTOCOL.md §6: 6480 B -> 6496 B.
        self.assertEqual(crypto.encrypted_size(6480), 6496)

    def test_aes_is_standard_cbc_pkcs7(self):
        "Interoperable: a plain AES-CBC decryptor reads our output"
        key = crypto.SymmetricKey.generate()
        encrypted = key.encrypt(b'<Faktura/>')
        decryptor = Cipher(
            algorithms.AES(key.key), modes.CBC(key.iv)).decryptor()
        padded = decryptor.update(encrypted) + decryptor.finalize()
        self.assertEqual(padded, b'<Faktura/>' + bytes([6]) * 6)

    def test_aes_streaming_equals_one_shot(self):
        "The streaming encryptor (batch parts) gives the same bytes"
        key = crypto.SymmetricKey.generate()
        data = b'x' * 70001
        encryptor = key.encryptor()
        out = io.BytesIO()
        for start in range(0, len(data), 4096):
            out.write(encryptor.update(data[start:start + 4096]))
        out.write(encryptor.finalize())
        self.assertEqual(out.getvalue(), key.encrypt(data))

    def test_aes_wrong_key_or_corruption(self):
        "A wrong key or a truncated ciphertext is refused"
        key = crypto.SymmetricKey.generate()
        encrypted = key.encrypt(b'secret invoice')
        with self.assertRaises(ValueError):
            key.decrypt(encrypted[:-1])
        other = crypto.SymmetricKey(key.key, bytes(16))
        try:
            self.assertNotEqual(other.decrypt(encrypted), b'secret invoice')
        except ValueError:
            pass

    def test_key_hidden_in_repr(self):
        key = crypto.SymmetricKey.generate()
        self.assertNotIn(key.key.hex(), repr(key))
        self.assertNotIn(base64.b64encode(key.key).decode(), repr(key))

    def test_oaep_round_trip(self):
        "The session key wrapped with RSA-OAEP SHA-256 / MGF1-SHA-256"
        key = crypto.SymmetricKey.generate()
        wrapped = crypto.rsa_oaep_encrypt(self.rsa_key.public_key(), key.key)
        self.assertEqual(len(wrapped), 256)
        self.assertEqual(
            crypto.rsa_oaep_decrypt(self.rsa_key, wrapped), key.key)
        # Randomised padding: two wraps differ, both unwrap.
        again = crypto.rsa_oaep_encrypt(self.rsa_key.public_key(), key.key)
        self.assertNotEqual(wrapped, again)
        self.assertEqual(crypto.rsa_oaep_decrypt(self.rsa_key, again),
            key.key)

    def test_oaep_is_sha256(self):
        "A SHA-1 OAEP decryptor must not read it (KSeF needs SHA-256)"
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding
        wrapped = crypto.rsa_oaep_encrypt(
            self.rsa_key.public_key(), b'k' * 32)
        sha1 = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()),
            algorithm=hashes.SHA1(), label=None)
        with self.assertRaises(ValueError):
            self.rsa_key.decrypt(wrapped, sha1)
        self.assertEqual(hashlib.sha256(b'k' * 32).digest(),
            hashlib.sha256(crypto.rsa_oaep_decrypt(
                    self.rsa_key, wrapped)).digest())
