# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Encryption at rest of private keys (trytond_ksef.secrets)."""
import unittest

from trytond_ksef import secrets

SECRET = 'q3J0cJm0H7kq2v3Hc8XwZr9N5bT1aLp6yUeFgVdKs2A'
OTHER = 'Zp8Lw2Nq5Rt7Yv9Bx1Cz3Dm4Fk6Gh0Jj8Ks2Ll4Mn6P'
DATA = b'-----BEGIN PRIVATE KEY-----\nnot a real key\n-----END...'
CONTEXT = b'8BF30676AC95EC1B270A8B130A7CDB13FF093F68ACAFE00FCD9EF48C81395371'


class SecretsTest(unittest.TestCase):

    def assertCode(self, code, function, *args, **kwargs):
        with self.assertRaises(secrets.SecretError) as context:
            function(*args, **kwargs)
        self.assertEqual(context.exception.code, code)
        return context.exception

    def test_round_trip(self):
        blob = secrets.encrypt(SECRET, DATA, CONTEXT)
        self.assertNotIn(DATA, blob)
        self.assertEqual(secrets.decrypt(SECRET, blob, CONTEXT), DATA)

    def test_round_trip_without_context(self):
        blob = secrets.encrypt(SECRET, b'')
        self.assertEqual(secrets.decrypt(SECRET, blob), b'')

    def test_randomised(self):
        "Two encryptions of the same data differ (salt and nonce)."
        self.assertNotEqual(
            secrets.encrypt(SECRET, DATA), secrets.encrypt(SECRET, DATA))

    def test_format(self):
        blob = secrets.encrypt(SECRET, DATA)
        self.assertEqual(blob[:3], b'KS\x01')
        # header 47 + ciphertext + tag 16
        self.assertEqual(len(blob), 47 + len(DATA) + 16)

    def test_wrong_secret(self):
        blob = secrets.encrypt(SECRET, DATA, CONTEXT)
        error = self.assertCode(
            'secret_key_mismatch', secrets.decrypt, OTHER, blob, CONTEXT)
        self.assertNotIn(SECRET, str(error))
        self.assertNotIn(OTHER, str(error))

    def test_context_binding(self):
        blob = secrets.encrypt(SECRET, DATA, CONTEXT)
        self.assertCode('secret_blob_invalid',
            secrets.decrypt, SECRET, blob, b'another fingerprint')
        self.assertCode('secret_blob_invalid', secrets.decrypt, SECRET, blob)

    def test_tamper(self):
        blob = secrets.encrypt(SECRET, DATA, CONTEXT)
        # nonce (35..46), ciphertext, tag: authenticated by GCM
        for index in (40, 47, 60, len(blob) - 1):
            tampered = bytearray(blob)
            tampered[index] ^= 0x01
            self.assertCode('secret_blob_invalid',
                secrets.decrypt, SECRET, bytes(tampered), CONTEXT)

    def test_tamper_salt(self):
        "A changed salt derives other keys: reported as a secret mismatch."
        blob = bytearray(secrets.encrypt(SECRET, DATA))
        blob[5] ^= 0x80
        self.assertCode('secret_key_mismatch',
            secrets.decrypt, SECRET, bytes(blob))

    def test_truncated_or_foreign(self):
        blob = secrets.encrypt(SECRET, DATA)
        for bad in (b'', blob[:40], b'XX' + blob[2:],
                blob[:2] + b'\x02' + blob[3:], DATA):
            self.assertCode('secret_blob_invalid',
                secrets.decrypt, SECRET, bad)

    def test_weak_secret(self):
        for weak in (None, '', 'short', 'a' * 64, '01' * 32,
                SECRET[:secrets.MIN_SECRET_LENGTH - 1], SECRET.encode()):
            error = self.assertCode(
                'secret_key_weak', secrets.check_secret, weak)
            self.assertEqual(error.params,
                {'minimum': secrets.MIN_SECRET_LENGTH})
            self.assertIn(str(secrets.MIN_SECRET_LENGTH), str(error))
            self.assertCode('secret_key_weak', secrets.encrypt, weak, DATA)
        blob = secrets.encrypt(SECRET, DATA)
        self.assertCode('secret_key_weak', secrets.decrypt, '', blob)

    def test_minimum_length_accepted(self):
        secret = SECRET[:secrets.MIN_SECRET_LENGTH]
        secrets.check_secret(secret)
        self.assertEqual(
            secrets.decrypt(secret, secrets.encrypt(secret, DATA)), DATA)

    def test_generate_secret(self):
        first, second = secrets.generate_secret(), secrets.generate_secret()
        self.assertNotEqual(first, second)
        self.assertEqual(len(first), 43)
        secrets.check_secret(first)
        self.assertRegex(first, r'^[A-Za-z0-9_-]+$')

    def test_context_must_be_bytes(self):
        with self.assertRaises(TypeError):
            secrets.encrypt(SECRET, DATA, 'text')
