# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Property-based tests of certificate uploads (hypothesis).

Whatever a user uploads, `certificates.inspect` either accepts it, when it
is a usable KSeF certificate with its key, or raises CertificateError with
a known code (the Tryton layer shows message ``ksef.msg_<code>``): never
another exception, and never with the password or key material in the
error.  Generated cases combine key types (RSA 2048/1024, EC P-256/P-384/
P-521/secp256k1, Ed25519), key usages, validity, subjects, containers
(separate files, PKCS#12 with AES or 3DES), encodings and passwords; their
expected outcome comes from `uploads.expected`.  Hostile files are random
bytes, random bodies in PEM armour, and truncated or mutated good files.

Examples are derandomized (the same on every run) and not stored; set
KSEF_PROPERTY_EXAMPLES to multiply their number (e.g. 20 for a long run).
Example counts are printed to stderr at the end of each test.
"""
import os
import sys
import unittest
import warnings
from binascii import hexlify

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trytond_ksef import certificates
from trytond_ksef.certificates import CertificateError

from . import uploads

SCALE = max(1, int(os.environ.get('KSEF_PROPERTY_EXAMPLES', '1') or 1))
CODES = frozenset(certificates._MESSAGES)


def _settings(examples):
    return settings(max_examples=examples * SCALE, deadline=None,
        database=None, derandomize=True, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow,
            HealthCheck.data_too_large, HealthCheck.filter_too_much])


def _inspect(**kwargs):
    # Malformed files make cryptography warn (BER fallback, negative
    # serials); the outcome is what matters here.
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return certificates.inspect(**kwargs)


def _secret_forms(password, private_key=None):
    forms = set()
    if password:
        forms.add(password.encode('utf-8') if isinstance(password, str)
            else password)
    if private_key is not None:
        der = private_key.private_bytes(serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        forms |= {der, hexlify(der), hexlify(der).upper()}
    return {f for f in forms if len(f) >= 4}


class Counted:
    "Count examples and outcomes of a property; print them at the end."

    def setUp(self):
        super().setUp()
        self.outcomes = {}

    def count(self, outcome):
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def tearDown(self):
        total = sum(self.outcomes.values())
        print("\n  %s: %d examples (%s)" % (self.id().rsplit('.', 1)[-1],
                total, ', '.join('%s %d' % item
                    for item in sorted(self.outcomes.items(),
                        key=lambda i: -i[1]))),
            file=sys.stderr)
        super().tearDown()

    def assertClean(self, error, forms):
        "The error is a known one and shows no secret."
        self.assertIn(error.code, CODES)
        text = (str(error) + repr(error.params)).encode('utf-8')
        for form in forms:
            self.assertNotIn(form, text)
        # The translated message takes exactly these parameters.
        str(certificates._MESSAGES[error.code].format(**error.params))

    def assertUsable(self, result, purpose, now):
        "A file inspect() accepts really is usable (nothing slipped)."
        certificate = result.certificate
        self.assertIsNotNone(result.key)
        self.assertTrue(certificate.matches(result.key))
        if purpose is not None:
            self.assertEqual(certificate.purpose, purpose)
        self.assertTrue(
            certificate.not_before <= now <= certificate.not_after)
        key_type = certificate.key_type
        if key_type.startswith('RSA '):
            self.assertGreaterEqual(int(key_type.split()[1]),
                certificates.MIN_RSA_BITS)
        else:
            self.assertEqual(key_type, 'EC P-256')



def _weighted(values, favourite, weight):
    "Draw from `values`, `favourite` ones `weight` times as often."
    return st.sampled_from(sorted(values) + sorted(favourite) * (weight - 1))


# Weighted so that every check of the chain, and acceptance, is reached
# often (uniform draws would stop most cases at the password or key type).
CASES = st.builds(uploads.Case,
    key=_weighted(uploads.KEYS, ['rsa2048', 'p256'], 6),
    mismatch=_weighted([False, True], [False], 4),
    usage=_weighted(uploads.USAGES, ['authentication', 'offline'], 3),
    validity=_weighted(uploads.VALIDITIES, ['valid'], 3),
    subject=st.sampled_from(uploads.SUBJECTS),
    container=st.sampled_from(uploads.CONTAINERS),
    cert_encoding=st.sampled_from(uploads.CERT_ENCODINGS),
    key_encoding=st.sampled_from(uploads.KEY_ENCODINGS),
    password=_weighted(uploads.PASSWORDS, ['right'], 8),
    purpose=st.sampled_from(uploads.PURPOSES),
    wrong_password=st.text(min_size=1, max_size=24).map(
        lambda t: 'Wr0ng#' + t)).filter(uploads.valid)


class GeneratedUploadTest(Counted, unittest.TestCase):
    "Generated uploads give exactly the expected error or warnings."

    @_settings(400)
    @given(CASES)
    def test_expected_outcome(self, case):
        arguments = uploads.build(case)
        code, expected_warnings = uploads.expected(case)
        forms = _secret_forms(uploads.PASSWORD) | _secret_forms(
            case.given_password, uploads.key(case.key, case.mismatch))
        try:
            result = _inspect(purpose=case.purpose, nip=uploads.NIP,
                now=uploads.NOW, **arguments)
        except CertificateError as error:
            self.count(error.code)
            self.assertEqual(error.code, code, case)
            self.assertClean(error, forms)
            params = uploads.expected_params(case)
            if params is not None:
                self.assertEqual(error.params, params, case)
        else:
            self.count('accepted')
            self.assertIsNone(code, case)
            self.assertEqual(
                tuple(w.code for w in result.warnings), expected_warnings,
                case)
            self.assertUsable(result, case.purpose, uploads.NOW)


def _good(name):
    return uploads.material()[name]


class HostileUploadTest(Counted, unittest.TestCase):
    "Random, truncated and mutated files: refused cleanly, never a crash."

    def refused(self, **arguments):
        forms = _secret_forms(arguments.get('password'))
        try:
            result = _inspect(purpose='authentication', nip=uploads.NIP,
                now=uploads.NOW, **arguments)
        except CertificateError as error:
            self.count(error.code)
            self.assertClean(error, forms)
            return error
        self.count('accepted')
        return result

    @_settings(300)
    @given(st.sampled_from(('cert_bytes', 'key_bytes', 'p12_bytes')),
        st.one_of(
            st.binary(max_size=3000),
            st.binary(max_size=3000).map(lambda b: b'\x30\x82' + b),
            st.tuples(st.sampled_from(uploads.PEM_LABELS),
                st.binary(max_size=1500)).map(
                lambda t: uploads.pem_wrap(*t))),
        st.sampled_from([None, '', uploads.PASSWORD, 'Wr0ng#x']))
    def test_random_bytes(self, which, data, password):
        result = self.refused(**uploads.arguments(which, data, password))
        self.assertIsInstance(result, CertificateError)

    @_settings(300)
    @given(st.sampled_from(sorted(uploads.material())),
        st.floats(min_value=0, max_value=1))
    def test_truncated(self, name, fraction):
        which, good, password = _good(name)
        data = uploads.truncate(good, fraction)
        result = self.refused(**uploads.arguments(which, data, password))
        self.assertIsInstance(result, CertificateError)

    @_settings(600)
    @given(st.sampled_from(sorted(uploads.material())),
        st.lists(st.tuples(st.floats(min_value=0, max_value=1),
                st.sampled_from(('set', 'xor', 'delete', 'insert')),
                st.integers(0, 255)), min_size=1, max_size=4))
    def test_mutated(self, name, edits):
        which, good, password = _good(name)
        data = uploads.mutate(good, edits)
        result = self.refused(**uploads.arguments(which, data, password))
        if not isinstance(result, CertificateError):
            # The change hit a part without meaning (a padding byte, an
            # unused field): the file must still be fully usable.
            self.assertUsable(result, 'authentication', uploads.NOW)

    def test_seeded_sample(self):
        "The seeded sample the Tryton scenario uploads is refused here too."
        for description, arguments in uploads.hostile_sample(60, 9):
            with self.subTest(description):
                result = self.refused(**arguments)
                if description.startswith(('random', 'pem_random',
                            'truncated')):
                    self.assertIsInstance(result, CertificateError)


class FoundByFuzzingTest(unittest.TestCase):
    """Malformed certificates on which cryptography raises exceptions that
    are not ValueError (found by fuzzing; they used to escape inspect())."""

    def setUp(self):
        self.der = uploads.certificate('p256', 'offline', 'valid',
            'company_seal')

    def assertUnreadable(self, der):
        with self.assertRaises(CertificateError) as context:
            _inspect(cert_bytes=der)
        self.assertEqual(context.exception.code, 'unreadable_certificate')

    def test_invalid_version(self):
        version = b'\xa0\x03\x02\x01\x02'  # [0] INTEGER 2 (v3)
        self.assertIn(version, self.der)
        self.assertUnreadable(self.der.replace(
                version, b'\xa0\x03\x02\x01\x05', 1))

    def test_duplicate_extension(self):
        from asn1crypto import x509 as asn1_x509
        cert = asn1_x509.Certificate.load(self.der)
        extensions = cert['tbs_certificate']['extensions']
        extensions.append(extensions[0].copy())
        cert['tbs_certificate']['extensions'] = extensions
        self.assertUnreadable(cert.dump(force=True))

    def test_bit_string_name_attribute(self):
        "A name attribute of the wrong type (cryptography: TypeError)."
        country = b'\x13\x02PL'  # PrintableString 'PL' of the issuer
        self.assertIn(country, self.der)
        der = self.der.replace(country, b'\x03\x02\x00L', 1)
        with self.assertRaises(TypeError):
            x509.load_der_x509_certificate(der).issuer.rfc4514_string()
        self.assertUnreadable(der)

    def test_pkcs12_password_with_nul(self):
        "cryptography panics (a BaseException) on such a password."
        _, p12, _ = _good('p12')
        for password in (b'a\x00b', 'Wr0ng#\x00'):
            with self.assertRaises(CertificateError) as context:
                _inspect(p12_bytes=p12, password=password)
            self.assertEqual(context.exception.code, 'wrong_password')
