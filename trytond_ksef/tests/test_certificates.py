# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""KSeF certificates: loading, classification, checks and the CLI."""
import base64
import contextlib
import datetime
import hashlib
import io
import json
import os
import tempfile
import unittest

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import pkcs12 as c_pkcs12

from trytond_ksef import certificates, cli, testcerts
from trytond_ksef.certificates import CertificateError

DATA = os.path.join(os.path.dirname(__file__), 'data')
UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 1, 1, tzinfo=UTC)


def _vector():
    with open(os.path.join(DATA, 'code2-mf-example.json')) as file:
        return json.load(file)


def _data(name):
    with open(os.path.join(DATA, 'certs', name), 'rb') as file:
        return file.read()


VECTOR = _vector()
MF_DER = base64.b64decode(VECTOR['certificate_der_base64'])
MF_KEY_DER = base64.b64decode(VECTOR['private_key_der_base64'])
MF_NIP = '5265877635'


class CodeMixin:

    def assertCode(self, code, function, *args, **kwargs):
        with self.assertRaises(CertificateError) as context:
            function(*args, **kwargs)
        self.assertEqual(context.exception.code, code)
        return context.exception


class MFCertificateTest(CodeMixin, unittest.TestCase):
    "The certificate issued by the MF KSeF CA (code2-mf-example.json)."

    def test_load_der(self):
        cert = certificates.load_certificate(MF_DER)
        self.assertEqual(cert.der, MF_DER)
        self.assertTrue(cert.normalised)
        self.assertEqual(cert.identifier,
            certificates.SubjectIdentifier('Nip', MF_NIP))
        self.assertEqual(cert.identifier.auth_type, 'certificateSubject')
        self.assertEqual(cert.nip, MF_NIP)
        self.assertEqual(cert.serial_hex, VECTOR['certificate_serial_hex'])
        self.assertEqual(cert.serial_hex, '01F20A5D352AE590')
        self.assertEqual(cert.serial_number, 0x01F20A5D352AE590)
        self.assertEqual(cert.fingerprint,
            hashlib.sha256(MF_DER).hexdigest().upper())
        self.assertEqual(cert.key_type, 'RSA 2048')
        self.assertEqual(cert.key_usage, frozenset({'digital_signature'}))
        self.assertFalse(cert.qualified)
        self.assertEqual(cert.purpose, certificates.AUTHENTICATION)
        self.assertEqual(cert.subject, 'CN=5265877635,O=Beta,'
            'organizationIdentifier=VATPL-5265877635,C=PL')
        self.assertEqual(cert.issuer, 'CN=TI CCK KSeF,'
            'OU=Krajowa Administracja Skarbowa,O=Ministerstwo Finansów,C=PL')
        self.assertEqual(cert.not_before,
            datetime.datetime(2025, 7, 29, 9, 28, 37, tzinfo=UTC))
        self.assertEqual(cert.not_after,
            datetime.datetime(2027, 7, 29, 9, 28, 37, tzinfo=UTC))

    def test_load_pem_and_base64(self):
        pem = certificates.load_certificate(MF_DER).pem.encode('ascii')
        self.assertTrue(pem.startswith(b'-----BEGIN CERTIFICATE-----\n'))
        for data in (pem, b'junk before\n' + pem + b'junk after',
                VECTOR['certificate_der_base64'].encode('ascii')):
            self.assertEqual(certificates.load_certificate(data).der, MF_DER)

    def test_normalised_copy(self):
        """Exactly the two NULL parameters go, with the lengths around them
        (built here independently of asn1crypto)."""
        with_null = bytes.fromhex('300c06082a8648ce3d0403040500')
        without = bytes.fromhex('300a06082a8648ce3d040304')
        self.assertEqual(MF_DER.count(with_null), 2)
        expected = MF_DER.replace(with_null, without)
        # outer SEQUENCE 0x0361 -> 0x035d, tbsCertificate 0x02e6 -> 0x02e4
        self.assertEqual(expected[:8], bytes.fromhex('30820361308202e6'))
        expected = bytes.fromhex('3082035d308202e4') + expected[8:]
        self.assertEqual(certificates._normalise(MF_DER), expected)

    def test_public_key_verifies_vector(self):
        "The key read from the normalised copy verifies MF's CODE II link."
        cert = certificates.load_certificate(MF_DER)
        signature = VECTOR['link'].rsplit('/', 1)[1]
        signature = base64.urlsafe_b64decode(
            signature + '=' * (-len(signature) % 4))
        cert.public_key.verify(signature,
            VECTOR['signed_text'].encode('utf-8'),
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
            hashes.SHA256())

    def test_key_matches(self):
        cert = certificates.load_certificate(MF_DER)
        key = certificates.load_private_key(MF_KEY_DER)
        self.assertTrue(cert.matches(key))
        self.assertEqual(certificates.check(
            cert, key, 'authentication', nip=MF_NIP, now=NOW), [])

    def test_inspect_authentication(self):
        result = certificates.inspect(MF_DER, MF_KEY_DER,
            purpose='authentication', nip='PL 526-587-76-35', now=NOW)
        self.assertEqual(result.certificate.der, MF_DER)
        self.assertEqual(result.warnings, ())
        self.assertTrue(result.certificate.matches(result.key))

    def test_not_offline(self):
        error = self.assertCode('purpose_mismatch', certificates.inspect,
            MF_DER, MF_KEY_DER, purpose='offline', now=NOW)
        self.assertEqual(error.params,
            {'expected': 'offline', 'found': 'authentication'})
        self.assertEqual(error.certificate.der, MF_DER)

    def test_other_nip_is_a_warning(self):
        result = certificates.inspect(MF_DER, MF_KEY_DER,
            purpose='authentication', nip='1111111111', now=NOW)
        [warning] = result.warnings
        self.assertEqual(warning.code, 'nip_mismatch')
        self.assertEqual(warning.params,
            {'certificate_nip': MF_NIP, 'nip': '1111111111'})
        self.assertIn('1111111111', str(warning))

    def test_validity(self):
        error = self.assertCode('expired', certificates.inspect,
            MF_DER, now=datetime.datetime(2027, 7, 30, tzinfo=UTC))
        self.assertEqual(error.params,
            {'not_after': '2027-07-29 09:28:37 UTC'})
        error = self.assertCode('not_yet_valid', certificates.inspect,
            MF_DER, now=datetime.datetime(2025, 7, 29, 9, 28, tzinfo=UTC))
        self.assertEqual(error.params,
            {'not_before': '2025-07-29 09:28:37 UTC'})
        result = certificates.inspect(
            MF_DER, now=datetime.datetime(2027, 7, 1, tzinfo=UTC))
        [warning] = result.warnings
        self.assertEqual(warning.code, 'expires_soon')
        self.assertEqual(warning.params['days'], '28')

    def test_pkcs12(self):
        "KSeF-issued certificates also load from PKCS#12 files."
        for name, password in [('mf-aes.p12', b'secret'),
                ('mf-3des.p12', 'secret'), ('mf-plain.p12', None),
                ('mf-plain.p12', b''), ('mf-empty.p12', None),
                ('mf-empty.p12', '')]:
            with self.subTest(name=name, password=password):
                cert, key = certificates.load_pkcs12(_data(name), password)
                self.assertEqual(cert.der, MF_DER)
                self.assertTrue(cert.matches(key))
                result = certificates.inspect(p12_bytes=_data(name),
                    password=password, purpose='authentication', now=NOW)
                self.assertEqual(result.certificate.der, MF_DER)

    def test_pkcs12_wrong_password(self):
        for name in ('mf-aes.p12', 'mf-3des.p12', 'mf-rc2.p12'):
            for password in (None, b'', b'wrong'):
                with self.subTest(name=name, password=password):
                    self.assertCode('wrong_password',
                        certificates.load_pkcs12, _data(name), password)
        for name in ('mf-plain.p12', 'mf-empty.p12'):
            self.assertCode('wrong_password',
                certificates.load_pkcs12, _data(name), b'secret')

    def test_pkcs12_legacy_rc2(self):
        self.assertCode('unsupported_pkcs12',
            certificates.load_pkcs12, _data('mf-rc2.p12'), b'secret')


class KeyTest(CodeMixin, unittest.TestCase):
    "Private keys in every form users bring them."

    def forms(self, key):
        s = serialization
        pkcs8, trad = s.PrivateFormat.PKCS8, s.PrivateFormat.TraditionalOpenSSL
        plain = s.NoEncryption()
        encrypted = s.BestAvailableEncryption(b'zaq1@WSX')
        yield 'pem pkcs8', key.private_bytes(
            s.Encoding.PEM, pkcs8, plain), None
        yield 'der pkcs8', key.private_bytes(
            s.Encoding.DER, pkcs8, plain), None
        yield 'pem traditional', key.private_bytes(
            s.Encoding.PEM, trad, plain), None
        der = key.private_bytes(s.Encoding.DER, trad, plain)
        yield 'der traditional', der, None
        yield 'base64 der', base64.encodebytes(der), None
        yield 'pem pkcs8 encrypted', key.private_bytes(
            s.Encoding.PEM, pkcs8, encrypted), b'zaq1@WSX'
        yield 'der pkcs8 encrypted', key.private_bytes(
            s.Encoding.DER, pkcs8, encrypted), 'zaq1@WSX'
        yield 'pem traditional encrypted', key.private_bytes(
            s.Encoding.PEM, trad, encrypted), b'zaq1@WSX'

    def test_forms(self):
        for key_type in ('rsa', 'ec'):
            key = testcerts.cached_key(key_type)
            for name, data, password in self.forms(key):
                with self.subTest(key_type=key_type, form=name):
                    loaded = certificates.load_private_key(data, password)
                    self.assertEqual(loaded.private_numbers(),
                        key.private_numbers())
                    checked = certificates.load_private_key(data, password,
                        checked=True)
                    self.assertEqual(checked.private_numbers(),
                        key.private_numbers())
                    if password is None:
                        # A password for a plain key is ignored.
                        certificates.load_private_key(data, b'unused')
                    else:
                        self.assertCode('wrong_password',
                            certificates.load_private_key, data, b'bad')
                        self.assertCode('wrong_password',
                            certificates.load_private_key, data, None)
                        self.assertCode('wrong_password',
                            certificates.load_private_key, data, '')

    def test_unreadable(self):
        cert_der, _ = testcerts.make_certificate()
        for data in (b'', b'garbage', b'\x30\x03\x02\x01\x00', cert_der,
                testcerts.pem(cert_der),
                b'-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----'
                ):
            self.assertCode('unreadable_key',
                certificates.load_private_key, data)

    def test_wrong_password_error_hides_password(self):
        data = testcerts.private_key_pem(
            testcerts.cached_key('ec'), password='correct horse')
        error = self.assertCode('wrong_password',
            certificates.load_private_key, data, 'battery staple')
        self.assertNotIn('battery', str(error))
        self.assertEqual(error.params, {})


class CertificateTest(CodeMixin, unittest.TestCase):
    "Certificates made by testcerts, shaped like KSeF's."

    def test_unreadable(self):
        cert_der, key = testcerts.make_certificate()
        for data in (b'', b'garbage', b'\x30\x03\x02\x01\x00',
                cert_der[:-10], cert_der + b'\x00',
                testcerts.private_key_pem(key),
                b'-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----'):
            self.assertCode('unreadable_certificate',
                certificates.load_certificate, data)
        with self.assertRaises(TypeError):
            certificates.load_certificate('text')
        # A malformed keyUsage: cryptography only notices when reading it.
        bad_usage = x509.UnrecognizedExtension(
            x509.ObjectIdentifier('2.5.29.15'), b'\x03\x02\x07')
        cert_der, _ = testcerts.make_certificate(
            None, key_type='ec', extensions=[bad_usage])
        self.assertCode('unreadable_certificate',
            certificates.load_certificate, cert_der)

    def test_first_of_chain(self):
        first, _ = testcerts.make_certificate(nip='1111111111', seal=True)
        second, _ = testcerts.make_certificate(pesel='12345678901')
        data = testcerts.pem(first) + testcerts.pem(second)
        self.assertEqual(certificates.load_certificate(data).der, first)

    def test_identifiers(self):
        cases = [
            (dict(nip='5265877635', seal=True), ('Nip', '5265877635')),
            (dict(nip='5265877635'), ('Nip', '5265877635')),
            (dict(pesel='02070803628'), ('Pesel', '02070803628')),
            ]
        for kwargs, expected in cases:
            with self.subTest(**kwargs):
                cert_der, _ = testcerts.make_certificate(**kwargs)
                cert = certificates.load_certificate(cert_der)
                self.assertEqual(tuple(vars(cert.identifier).values()),
                    expected)
                self.assertFalse(cert.normalised)
        cert_der, _ = testcerts.make_certificate(common_name='Anna Nowak')
        cert = certificates.load_certificate(cert_der)
        self.assertEqual(cert.identifier.type, 'Fingerprint')
        self.assertEqual(cert.identifier.value, cert.fingerprint)
        self.assertEqual(cert.identifier.auth_type, 'certificateFingerprint')
        self.assertIsNone(cert.nip)

    def test_subject_shapes(self):
        cert_der, _ = testcerts.make_certificate(
            nip='5265877635', seal=True, common_name='Beta')
        self.assertEqual(certificates.load_certificate(cert_der).subject,
            'CN=Beta,O=Beta,organizationIdentifier=VATPL-5265877635,C=PL')
        cert_der, _ = testcerts.make_certificate(pesel='02070803628')
        self.assertEqual(certificates.load_certificate(cert_der).subject,
            'CN=Jan Kowalski,serialNumber=PNOPL-02070803628,'
            'surname=Kowalski,givenName=Jan,C=PL')
        with self.assertRaises(ValueError):
            testcerts.make_certificate(seal=True)
        with self.assertRaises(ValueError):
            testcerts.make_certificate(nip='5265877635', pesel='02070803628')

    def test_serial_hex(self):
        for serial, expected in [(0x01F20A5D352AE590, '01F20A5D352AE590'),
                (1, '0000000000000001'),
                (0xFEDCBA9876543210AB, 'FEDCBA9876543210AB'),
                (0xABCDEF0123456789A, '0ABCDEF0123456789A')]:
            cert_der, _ = testcerts.make_certificate(serial_number=serial)
            self.assertEqual(
                certificates.load_certificate(cert_der).serial_hex, expected)
        cert_der, _ = testcerts.make_certificate()
        self.assertRegex(certificates.load_certificate(cert_der).serial_hex,
            r'^[0-9A-F]{16}$')

    def test_good_rsa_and_ec(self):
        for key_type, key_type_text in [
                ('rsa', 'RSA 2048'), ('ec', 'EC P-256')]:
            for purpose in certificates.PURPOSES:
                with self.subTest(key_type=key_type, purpose=purpose):
                    cert_der, key = testcerts.make_certificate(
                        purpose, nip='5265877635', key_type=key_type)
                    result = certificates.inspect(cert_der,
                        testcerts.private_key_pem(key, 'pw'), 'pw',
                        purpose=purpose, nip='5265877635')
                    self.assertEqual(result.warnings, ())
                    self.assertEqual(result.certificate.purpose, purpose)
                    self.assertEqual(
                        result.certificate.key_type, key_type_text)

    def test_purpose(self):
        cases = [
            (dict(purpose='authentication'), 'authentication'),
            (dict(purpose='offline'), 'offline'),
            (dict(purpose=None), 'authentication'),  # no keyUsage: any use
            (dict(key_usage={'digital_signature', 'content_commitment'}),
                'authentication'),
            (dict(key_usage={'key_encipherment'}), None),
            (dict(key_usage={'content_commitment'},
                extensions=[testcerts.qualified_extension()]),
                'authentication'),
            ]
        for kwargs, expected in cases:
            with self.subTest(**kwargs):
                cert_der, key = testcerts.make_certificate(
                    key_type='ec', **kwargs)
                cert = certificates.load_certificate(cert_der)
                self.assertEqual(cert.purpose, expected)
                for purpose in certificates.PURPOSES:
                    if purpose == expected:
                        certificates.check(cert, key, purpose)
                    else:
                        error = self.assertCode('purpose_mismatch',
                            certificates.check, cert, key, purpose)
                        self.assertEqual(error.params, {
                            'expected': purpose, 'found': expected or 'none'})
                # Without a purpose only the other checks apply.
                certificates.check(cert, key, None)
        cert_der, _ = testcerts.make_certificate(
            key_type='ec', extensions=[testcerts.qualified_extension()])
        self.assertTrue(certificates.load_certificate(cert_der).qualified)

    def test_purpose_swapped(self):
        cert_der, key = testcerts.make_certificate('offline', key_type='ec')
        error = self.assertCode('purpose_mismatch', certificates.inspect,
            cert_der, testcerts.private_key_pem(key), purpose='authentication')
        self.assertEqual(error.params,
            {'expected': 'authentication', 'found': 'offline'})
        with self.assertRaises(ValueError):
            certificates.check(
                certificates.load_certificate(cert_der), key, 'signing')

    def test_key_mismatch(self):
        cert_der, _ = testcerts.make_certificate(key_type='ec')
        other = testcerts.new_key('ec')
        self.assertCode('key_mismatch', certificates.inspect,
            cert_der, testcerts.private_key_pem(other))
        cert_der, _ = testcerts.make_certificate(key_type='rsa')
        self.assertCode('key_mismatch', certificates.inspect,
            cert_der, MF_KEY_DER, now=NOW)
        # Another key type altogether.
        self.assertCode('key_mismatch', certificates.inspect,
            cert_der, testcerts.private_key_pem(testcerts.cached_key('ec')))

    def test_weak_and_unsupported_keys(self):
        cert_der, key = testcerts.make_certificate(key_size=1024)
        error = self.assertCode('weak_key', certificates.inspect,
            cert_der, testcerts.private_key_pem(key))
        self.assertEqual(error.params,
            {'key_type': 'RSA 1024', 'minimum': 'RSA 2048'})
        for kwargs, key_type in [
                (dict(key_type='ec', curve='P-384'), 'EC P-384'),
                (dict(key_type='ed25519'), 'Ed25519')]:
            cert_der, key = testcerts.make_certificate(**kwargs)
            error = self.assertCode('unsupported_key', certificates.inspect,
                cert_der, testcerts.private_key_pem(key))
            self.assertEqual(error.params, {'key_type': key_type})

    def test_validity(self):
        now = datetime.datetime(2030, 6, 1, 12, tzinfo=UTC)
        cert_der, key = testcerts.make_certificate(key_type='ec',
            not_before=now + datetime.timedelta(hours=1),
            not_after=now + datetime.timedelta(days=365))
        cert = certificates.load_certificate(cert_der)
        self.assertCode('not_yet_valid', certificates.check,
            cert, key, 'authentication', now=now)
        certificates.check(cert, key, 'authentication',
            now=now + datetime.timedelta(hours=1))
        self.assertCode('expired', certificates.check, cert, key,
            'authentication', now=now + datetime.timedelta(days=366))
        with self.assertRaises(ValueError):
            certificates.check(cert, key, None, now=datetime.datetime.now())

    def test_nip_mismatch_only_for_nip_subjects(self):
        cert_der, key = testcerts.make_certificate(
            nip='5265877635', key_type='ec')
        cert = certificates.load_certificate(cert_der)
        [warning] = certificates.check(cert, key, None, nip='1111111111')
        self.assertEqual(warning.code, 'nip_mismatch')
        self.assertEqual(
            certificates.check(cert, key, None, nip='5265877635'), [])
        # A person authorised with a PESEL certificate: no warning.
        cert_der, key = testcerts.make_certificate(
            pesel='02070803628', key_type='ec')
        cert = certificates.load_certificate(cert_der)
        self.assertEqual(
            certificates.check(cert, key, None, nip='1111111111'), [])

    def test_inspect_arguments(self):
        cert_der, key = testcerts.make_certificate(key_type='ec')
        p12 = testcerts.pkcs12(cert_der, key, b'pw')
        with self.assertRaises(TypeError):
            certificates.inspect(cert_der, p12_bytes=p12)
        with self.assertRaises(TypeError):
            certificates.inspect()
        result = certificates.inspect(cert_der)
        self.assertIsNone(result.key)
        self.assertNotIn('key=', repr(result))


class PKCS12Test(CodeMixin, unittest.TestCase):

    def test_round_trip(self):
        for key_type in ('rsa', 'ec'):
            cert_der, key = testcerts.make_certificate(
                'offline', nip='5265877635', key_type=key_type)
            for password in (b'pw', 'hasło', None):
                with self.subTest(key_type=key_type, password=password):
                    data = testcerts.pkcs12(cert_der, key, password)
                    cert, loaded = certificates.load_pkcs12(data, password)
                    self.assertEqual(cert.der, cert_der)
                    self.assertEqual(loaded.private_numbers(),
                        key.private_numbers())
                    if password:
                        self.assertCode('wrong_password',
                            certificates.load_pkcs12, data, b'bad')

    def test_chain(self):
        "The certificate returned is the one of the key, not its CA."
        ca_der, _ = testcerts.make_certificate(
            None, key=testcerts.new_key('ec'), common_name='CA')
        cert_der, key = testcerts.make_certificate(key_type='ec')
        data = testcerts.pkcs12(cert_der, key, b'pw', cas=[ca_der])
        cert, _ = certificates.load_pkcs12(data, b'pw')
        self.assertEqual(cert.der, cert_der)
        key_der, certs = certificates._pkcs12_fallback(data, b'pw')
        self.assertEqual(set(certs), {ca_der, cert_der})

    def test_fallback_matches_cryptography(self):
        """The asn1crypto reader used for KSeF certificates gives what
        cryptography gives, for PBES2-AES and legacy PKCS#12 3DES files."""
        cert_der, key = testcerts.make_certificate(key_type='ec')
        legacy = (serialization.PrivateFormat.PKCS12.encryption_builder()
            .key_cert_algorithm(
                c_pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1()).build(b'pw'))
        modern = serialization.BestAvailableEncryption(b'pw')
        for encryption in (legacy, modern):
            data = c_pkcs12.serialize_key_and_certificates(b'name', key,
                x509.load_der_x509_certificate(cert_der), None, encryption)
            key_der, certs = certificates._pkcs12_fallback(data, b'pw')
            self.assertEqual(certs, [cert_der])
            loaded = certificates.load_private_key(key_der)
            self.assertEqual(loaded.private_numbers(), key.private_numbers())
            self.assertCode('wrong_password',
                certificates._pkcs12_fallback, data, b'other')

    def test_not_pkcs12(self):
        cert_der, key = testcerts.make_certificate(key_type='ec')
        for data in (b'', b'garbage', cert_der):
            self.assertCode('unreadable_certificate',
                certificates.load_pkcs12, data, b'pw')

    def test_pkcs12_kdf(self):
        "RFC 7292 B.2 KDF: the published SHA-1 vectors (OpenSSL's tests)."
        vectors = [
            (b'smeg', '0A58CF64530D823F', 1, 1, 24,
                '8AAAE6297B6CB04642AB5B077851284EB7128F1A2A7FBCA3'),
            (b'smeg', '0A58CF64530D823F', 1, 2, 8, '79993DFE048D3B76'),
            (b'smeg', '642B99AB44FB4B1F', 1, 1, 24,
                'F3A95FEC48D7711E985CFE67908C5AB79FA3D7C5CAA5D966'),
            (b'smeg', '642B99AB44FB4B1F', 1, 2, 8, 'C0A38D64A79BEA1D'),
            (b'smeg', '3D83C0E4546AC140', 1, 3, 20,
                '8D967D88F6CAA9D714800AB3D48051D63F73A312'),
            (b'queeg', '05DEC959ACFF72F7', 1000, 1, 24,
                'ED2034E36328830FF09DF1E1A07DD357185DAC0D4F9EB3D4'),
            (b'queeg', '05DEC959ACFF72F7', 1000, 2, 8, '11DEDAD7758D4860'),
            ]
        for password, salt, iterations, purpose, length, expected in vectors:
            self.assertEqual(certificates._pkcs12_kdf('sha1',
                certificates._bmp_password(password), bytes.fromhex(salt),
                iterations, purpose, length).hex().upper(), expected)
        self.assertEqual(certificates._bmp_password(b'ab'),
            b'\x00a\x00b\x00\x00')


class CLITest(unittest.TestCase):

    def setUp(self):
        self.directory = tempfile.TemporaryDirectory()
        self.addCleanup(self.directory.cleanup)

    def write(self, name, data):
        path = os.path.join(self.directory.name, name)
        with open(path, 'wb') as file:
            file.write(data)
        return path

    def main(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = cli.main(['inspect-certificate', *argv])
            except SystemExit as exit:
                status = exit.code
        return status, out.getvalue(), err.getvalue()

    def test_good(self):
        cert_der, key = testcerts.make_certificate(
            'offline', nip='5265877635', key_type='ec')
        cert = self.write('cert.pem', testcerts.pem(cert_der))
        key_file = self.write(
            'key.pem', testcerts.private_key_pem(key, 'Tajne-Hasło-1'))
        password = self.write('password', 'Tajne-Hasło-1\n'.encode())
        status, out, err = self.main('--cert', cert, '--key', key_file,
            '--password-file', password, '--purpose', 'offline',
            '--nip', '5265877635')
        self.assertEqual(status, 0, err)
        info = certificates.load_certificate(cert_der)
        for text in ('offline', 'Nip 5265877635', info.serial_hex,
                info.fingerprint, 'EC P-256', 'password accepted',
                'usable for offline'):
            self.assertIn(text, out)
        self.assertNotIn('Tajne', out + err)
        self.assertNotIn('PRIVATE', out + err)

    def test_mf_certificate_der(self):
        cert = self.write('mf.der', MF_DER)
        key_file = self.write('mf.key', MF_KEY_DER)
        status, out, err = self.main('--cert', cert, '--key', key_file,
            '--purpose', 'authentication')
        # The MF certificate expires on 2027-07-29.
        if datetime.datetime.now(UTC) < datetime.datetime(
                2027, 7, 29, tzinfo=UTC):
            self.assertEqual(status, 0, err)
        self.assertIn('01F20A5D352AE590', out)
        self.assertIn('Nip 5265877635', out)

    def test_p12(self):
        cert_der, key = testcerts.make_certificate(key_type='ec')
        p12 = self.write('c.p12', testcerts.pkcs12(cert_der, key, b'pw'))
        password = self.write('password', b'pw')
        status, out, err = self.main('--p12', p12, '--password-file',
            password, '--purpose', 'authentication')
        self.assertEqual(status, 0, err)
        self.assertIn('usable for authentication', out)
        wrong = self.write('wrong', b'nope\n')
        status, out, err = self.main('--p12', p12, '--password-file', wrong)
        self.assertEqual(status, 1)
        self.assertIn('password', err)
        self.assertNotIn('nope', out + err)

    def test_failures(self):
        cert_der, key = testcerts.make_certificate('offline', key_type='ec')
        cert = self.write('cert.der', cert_der)
        key_file = self.write('key.pem', testcerts.private_key_pem(key, 'pw'))
        status, out, err = self.main(
            '--cert', cert, '--key', key_file, '--purpose', 'authentication')
        self.assertEqual(status, 1)
        self.assertIn('password', err)
        status, out, err = self.main('--cert', cert,
            '--purpose', 'authentication')
        self.assertEqual(status, 1)
        # The certificate is described, then the reason.
        self.assertIn('Purpose:      offline', out)
        self.assertIn('allows offline use', err)
        other = self.write('other.pem', testcerts.private_key_pem(
            testcerts.new_key('ec')))
        status, out, err = self.main('--cert', cert, '--key', other)
        self.assertEqual(status, 1)
        self.assertIn('does not belong', err)
        garbage = self.write('garbage', b'garbage')
        status, out, err = self.main('--cert', garbage)
        self.assertEqual(status, 1)
        self.assertIn('cannot be read', err)

    def test_usage(self):
        cert_der, key = testcerts.make_certificate(key_type='ec')
        cert = self.write('cert.der', cert_der)
        self.assertEqual(self.main()[0], 2)
        self.assertEqual(self.main('--cert', cert, '--p12', cert)[0], 2)
        status, out, err = self.main('--cert', cert + '.missing')
        self.assertEqual(status, 2)
        self.assertIn('.missing', err)
        self.assertEqual(self.main('--cert', cert, '--purpose', 'x')[0], 2)
        status, out, err = self.main('--cert', cert)
        self.assertEqual(status, 0, err)
        self.assertIn('not checked', out)
