# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Tests of the XAdES-signed AuthTokenRequest (KSeF authentication path A).

Signatures are checked three ways: by :func:`xades.verify`, by signxml's
XAdESVerifier and, independently of Python, by ``xmlsec1`` (Debian package
``xmlsec1``), which must accept both references, the document and the
SignedProperties: KSeF answers a SignedProperties digest it cannot
reproduce with a bare 9105.
"""
import base64
import copy
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import unittest

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
)
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml.xades import (
    XAdESSignatureConfiguration,
    XAdESSigner,
    XAdESVerifier,
)

from trytond_ksef import xades, xmlutil

DATA = os.path.join(os.path.dirname(__file__), 'data')
UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC)
SIGNING_TIME = datetime.datetime(2026, 1, 15, 11, 59, 0, tzinfo=UTC)
CHALLENGE = '20250604-CR-461EA5B000-537A6BA15D-D7'
NIP = '5265877635'
DS = '{%s}' % xades.NS_DS
XA = '{%s}' % xades.NS_XADES
NSMAP = {'ds': xades.NS_DS, 'xades': xades.NS_XADES}
ORGANIZATION_IDENTIFIER = x509.ObjectIdentifier('2.5.4.97')
XMLSEC1 = shutil.which('xmlsec1')
XMLSEC1_MISSING = ("xmlsec1 is not installed (Debian/Ubuntu package "
    "'xmlsec1'); independent signature verification skipped")


def make_certificate(key_type, nip=NIP, serial=0x1234):
    "A self-signed company-seal certificate, as KSeF TEST accepts them."
    if key_type == 'rsa':
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
            x509.NameAttribute(NameOID.COUNTRY_NAME, 'PL'),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'Test Seal'),
            x509.NameAttribute(ORGANIZATION_IDENTIFIER, 'VATPL-%s' % nip),
            x509.NameAttribute(NameOID.COMMON_NAME, 'Test Seal %s' % nip),
            ])
    cert = (x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(datetime.datetime(2025, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime.datetime(2035, 1, 1, tzinfo=UTC))
        .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER), key


def mf_vector():
    "The KSeF-issued certificate of the CODE II example, with its key."
    with open(os.path.join(DATA, 'code2-mf-example.json')) as f:
        vector = json.load(f)
    cert_der = base64.b64decode(vector['certificate_der_base64'])
    key = serialization.load_der_private_key(
        base64.b64decode(vector['private_key_der_base64']), None)
    return cert_der, key, vector


def request(context=('nip', NIP), **kwargs):
    return xades.build_auth_token_request(CHALLENGE, context, **kwargs)


def tree(data):
    return etree.fromstring(data)


def resign(root, key):
    """Sign SignedInfo of `root` again (exclusive C14N, SHA-256; ECDSA as
    R||S) after a test changed it; `root` is changed in place."""
    signed_info = root.find('.//' + DS + 'SignedInfo')
    data = etree.tostring(signed_info, method='c14n', exclusive=True)
    if isinstance(key, rsa.RSAPrivateKey):
        value = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    else:
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        size = (key.key_size + 7) // 8
        value = r.to_bytes(size, 'big') + s.to_bytes(size, 'big')
    root.find('.//' + DS + 'SignatureValue').text = (
        base64.b64encode(value).decode())
    return root


def dump(root):
    return etree.tostring(root, xml_declaration=True, encoding='UTF-8')


class XMLSec1Mixin:

    def xmlsec1(self, signed, cert_der=None, trusted=True):
        """Run xmlsec1 --verify; return (ok, output).

        The key always comes from the certificate embedded in KeyInfo:
        with `trusted` the given certificate is the trusted root (so the
        embedded one must chain to it, i.e. be it), otherwise certificate
        checks are skipped (a KSeF-issued certificate whose CA is not at
        hand) but the key is still read from the embedded X509Data only.
        """
        if not XMLSEC1:
            self.skipTest(XMLSEC1_MISSING)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'signed.xml')
            with open(path, 'wb') as f:
                f.write(signed)
            command = [XMLSEC1, '--verify',
                '--enabled-reference-uris', 'empty,same-doc',
                '--id-attr:Id', xades.NS_XADES + ':SignedProperties',
                '--verification-gmt-time', NOW.strftime('%Y-%m-%d %H:%M:%S'),
                ]
            if trusted:
                cert_path = os.path.join(tmp, 'cert.der')
                with open(cert_path, 'wb') as f:
                    f.write(cert_der)
                command += ['--trusted-der', cert_path]
            else:
                command += ['--insecure', '--enabled-key-data', 'x509']
            command.append(path)
            result = subprocess.run(command, capture_output=True, timeout=60)
        output = (result.stdout + result.stderr).decode('utf-8', 'replace')
        return result.returncode == 0, output

    def assertXMLSec1Accepts(self, signed, cert_der=None, trusted=True):
        ok, output = self.xmlsec1(signed, cert_der, trusted)
        self.assertTrue(ok, output)
        # Both references checked, not only the document.
        self.assertIn('SignedInfo References (ok/all): 2/2', output)


class BuildTestCase(unittest.TestCase):
    "The unsigned AuthTokenRequest."

    def test_nip(self):
        data = request()
        root = xmlutil.parse(data)
        self.assertEqual(root.tag, '{%s}AuthTokenRequest' % xmlutil.NS_AUTH)
        self.assertEqual(root.nsmap, {None: xmlutil.NS_AUTH})
        self.assertEqual(
            [etree.QName(c).localname for c in root],
            ['Challenge', 'ContextIdentifier', 'SubjectIdentifierType'])
        self.assertEqual(root[0].text, CHALLENGE)
        self.assertEqual(root[1][0].tag, '{%s}Nip' % xmlutil.NS_AUTH)
        self.assertEqual(root[1][0].text, NIP)
        self.assertEqual(root[2].text, 'certificateSubject')
        self.assertTrue(xmlutil.schema('auth').validate(root))
        self.assertTrue(data.startswith(b"<?xml version='1.0' encoding"))

    def test_context_types(self):
        for context, element in [
                (('nip', NIP), 'Nip'),
                (('internalId', NIP + '-12345'), 'InternalId'),
                (('nipVatUe', NIP + '-ATU12345678'), 'NipVatUe'),
                (('peppolId', 'PPL123456'), 'PeppolId'),
                ]:
            with self.subTest(context=context):
                root = xmlutil.parse(request(context))
                identifier = root.find('{%s}ContextIdentifier'
                    % xmlutil.NS_AUTH)
                self.assertEqual(len(identifier), 1)
                self.assertEqual(identifier[0].tag,
                    '{%s}%s' % (xmlutil.NS_AUTH, element))
                self.assertEqual(identifier[0].text, context[1])
                self.assertEqual(xmlutil.schema_errors('auth', root), [])

    def test_anchored_patterns(self):
        """MF's PeppolId/NipVatUe patterns carry ^/$, literal characters
        for a conforming XSD engine: they are read as anchors (xmlutil),
        and wrong values are still refused."""
        for context in [
                ('peppolId', 'PPL12345'),
                ('peppolId', 'XPL123456'),
                ('peppolId', '^PPL123456$'),
                ('nipVatUe', NIP + '-ATU1234567'),
                ('nipVatUe', NIP + '-XX12345678'),
                ('nipVatUe', NIP + '-ATU12345678$'),
                ]:
            with self.subTest(context=context):
                with self.assertRaises(xades.RequestError) as cm:
                    request(context)
                self.assertEqual(cm.exception.code, 'xades_request_invalid')

    def test_fingerprint_and_allowed_ips(self):
        data = request(subject_identifier_type='certificateFingerprint',
            allowed_ips={'ip4_addresses': ['192.168.0.1'],
                'ip4_ranges': ['10.0.0.1-10.0.0.254'],
                'ip4_masks': ['172.16.0.0/16']})
        root = xmlutil.parse(data)
        self.assertEqual(xmlutil.schema_errors('auth', root), [])
        ips = root.find('{0}AuthorizationPolicy/{0}AllowedIps'.format(
                '{%s}' % xmlutil.NS_AUTH))
        self.assertEqual([etree.QName(c).localname for c in ips],
            ['Ip4Address', 'Ip4Range', 'Ip4Mask'])

    def test_unknown_context_type(self):
        with self.assertRaises(xades.RequestError) as cm:
            request(('pesel', '90010112345'))
        self.assertEqual(cm.exception.code, 'xades_context_type')
        self.assertIn('pesel', str(cm.exception))

    def test_unknown_subject_identifier_type(self):
        with self.assertRaises(xades.RequestError) as cm:
            request(subject_identifier_type='nip')
        self.assertEqual(cm.exception.code, 'xades_subject_identifier_type')

    def test_schema_checked_before_signing(self):
        for kwargs in [
                {'context': ('nip', '0123456789')},
                {'context': ('internalId', NIP)},
                {'allowed_ips': {'ip4_addresses': ['300.1.1.1']}},
                ]:
            with self.subTest(**kwargs):
                with self.assertRaises(xades.RequestError) as cm:
                    request(**kwargs)
                self.assertEqual(cm.exception.code, 'xades_request_invalid')
        with self.assertRaises(xades.RequestError) as cm:
            xades.build_auth_token_request('bad', ('nip', NIP))
        self.assertEqual(cm.exception.code, 'xades_request_invalid')


class SignVerifyMixin(XMLSec1Mixin):
    "Round trips and refusals, run for each key type."
    key_type = None
    signature_method = None

    @classmethod
    def setUpClass(cls):
        cls.cert_der, cls.key = make_certificate(cls.key_type)
        cls.other_der, cls.other_key = make_certificate(cls.key_type,
            nip='1111111111', serial=0x5678)
        cls.unsigned = request()
        cls.signed = xades.sign(cls.unsigned, cls.cert_der, cls.key,
            signing_time=SIGNING_TIME)

    def verify(self, data):
        return xades.verify(data, now=NOW)

    def assertRefused(self, data, code, ksef_code):
        with self.assertRaises(xades.SignatureError) as cm:
            self.verify(data)
        self.assertEqual(cm.exception.code, code, str(cm.exception))
        self.assertEqual(cm.exception.ksef_code, ksef_code)
        return cm.exception

    def test_round_trip(self):
        verified = self.verify(self.signed)
        self.assertEqual(verified.challenge, CHALLENGE)
        self.assertEqual(verified.context, ('nip', NIP))
        self.assertEqual(verified.subject_identifier_type,
            'certificateSubject')
        self.assertIsNone(verified.allowed_ips)
        self.assertEqual(verified.certificate_der, self.cert_der)
        self.assertEqual(verified.signing_time, SIGNING_TIME)
        self.assertEqual(verified.signature_method, self.signature_method)
        self.assertEqual(verified.namespace, xmlutil.NS_AUTH)
        self.assertEqual(x509.load_der_x509_certificate(
                verified.certificate_der).serial_number, 0x1234)
        # The signed root is exactly the unsigned request.
        self.assertIsNone(verified.root.find('.//' + DS + 'Signature'))
        self.assertEqual(
            etree.tostring(verified.root, method='c14n'),
            etree.tostring(tree(self.unsigned), method='c14n'))

    def test_nip_vat_ue_round_trip(self):
        """A signed request in the docs' NipVatUe context verifies; a
        value MF's pattern refuses is 21401 (the builder refuses it, so
        it is put in by hand before signing)."""
        value = NIP + '-ATU12345678'
        unsigned = request(('nipVatUe', value))
        verified = self.verify(xades.sign(unsigned, self.cert_der, self.key))
        self.assertEqual(verified.context, ('nipVatUe', value))
        bad = unsigned.replace(b'ATU12345678', b'ATU1234567')
        self.assertRefused(xades.sign(bad, self.cert_der, self.key),
            'xades_schema_invalid', 21401)

    def test_allowed_ips_round_trip(self):
        unsigned = request(allowed_ips={'ip4_addresses': ['192.168.0.1'],
                'ip4_masks': ['10.0.0.0/8']},
            context=('internalId', NIP + '-00001'))
        verified = self.verify(xades.sign(unsigned, self.cert_der, self.key))
        self.assertEqual(verified.context, ('internalId', NIP + '-00001'))
        self.assertEqual(verified.allowed_ips, {
                'ip4_addresses': ('192.168.0.1',), 'ip4_ranges': (),
                'ip4_masks': ('10.0.0.0/8',)})

    def test_profile(self):
        "The XAdES profile of MF's reference clients."
        root = tree(self.signed)
        signature = root[-1]
        self.assertEqual(signature.tag, DS + 'Signature')
        self.assertEqual(len(root.findall('.//' + DS + 'Signature')), 1)
        self.assertEqual(signature.get('Id'), 'Signature')
        signed_info = signature.find(DS + 'SignedInfo')
        self.assertEqual(
            signed_info.find(DS + 'CanonicalizationMethod').get('Algorithm'),
            xades.EXC_C14N)
        self.assertEqual(
            signed_info.find(DS + 'SignatureMethod').get('Algorithm'),
            self.signature_method)
        document, properties = signed_info.findall(DS + 'Reference')
        self.assertEqual(document.get('URI'), '')
        self.assertEqual(
            [t.get('Algorithm') for t in document.iter(DS + 'Transform')],
            [xades.ENVELOPED, xades.EXC_C14N])
        self.assertEqual(properties.get('URI'), '#SignedProperties')
        self.assertEqual(properties.get('Type'),
            'http://uri.etsi.org/01903#SignedProperties')
        # Explicit canonicalization on the SignedProperties reference.
        self.assertEqual(
            [t.get('Algorithm') for t in properties.iter(DS + 'Transform')],
            [xades.EXC_C14N])
        for reference in (document, properties):
            self.assertEqual(
                reference.find(DS + 'DigestMethod').get('Algorithm'),
                'http://www.w3.org/2001/04/xmlenc#sha256')
        self.assertEqual(signature.findtext(
                DS + 'KeyInfo/' + DS + 'X509Data/' + DS + 'X509Certificate'),
            base64.b64encode(self.cert_der).decode())
        self.assertIsNone(signature.find('.//' + DS + 'KeyValue'))
        signed_properties = signature.find(
            DS + 'Object/' + XA + 'QualifyingProperties/'
            + XA + 'SignedProperties')
        self.assertEqual(signed_properties.getparent().get('Target'),
            '#Signature')
        ssp = signed_properties.find(XA + 'SignedSignatureProperties')
        self.assertEqual(ssp.findtext(XA + 'SigningTime'),
            '2026-01-15T11:59:00Z')
        cert = ssp.find(XA + 'SigningCertificate/' + XA + 'Cert')
        self.assertEqual(cert.find(XA + 'CertDigest/' + DS + 'DigestMethod')
            .get('Algorithm'), 'http://www.w3.org/2001/04/xmlenc#sha256')
        self.assertEqual(
            cert.findtext(XA + 'CertDigest/' + DS + 'DigestValue'),
            base64.b64encode(hashlib.sha256(self.cert_der).digest()).decode())
        self.assertEqual(cert.findtext(
                XA + 'IssuerSerial/' + DS + 'X509SerialNumber'), str(0x1234))
        self.assertIn('CN=Test Seal %s' % NIP, cert.findtext(
                XA + 'IssuerSerial/' + DS + 'X509IssuerName'))
        self.assertEqual(signed_properties.findtext(
                './/' + XA + 'DataObjectFormat/' + XA + 'MimeType'),
            'text/xml')

    def test_deterministic(self):
        "Same input and signing time: only SignatureValue may differ."
        again = xades.sign(self.unsigned, self.cert_der, self.key,
            signing_time=SIGNING_TIME)
        first, second = tree(self.signed), tree(again)
        for root in (first, second):
            root.find('.//' + DS + 'SignatureValue').text = ''
        self.assertEqual(dump(first), dump(second))

    def test_default_signing_time(self):
        before = datetime.datetime.now(UTC).replace(microsecond=0)
        verified = xades.verify(
            xades.sign(self.unsigned, self.cert_der, self.key))
        after = datetime.datetime.now(UTC)
        self.assertLessEqual(verified.signing_time,
            after - xades.SIGNING_TIME_BACKDATE)
        self.assertGreaterEqual(verified.signing_time,
            before - xades.SIGNING_TIME_BACKDATE)

    def test_signxml_verifier(self):
        certificate = x509.load_der_x509_certificate(self.cert_der)
        results = XAdESVerifier().verify(self.signed, x509_cert=certificate,
            expect_config=XAdESSignatureConfiguration(expect_references=2))
        self.assertEqual(results[0].signed_xml.tag,
            '{%s}AuthTokenRequest' % xmlutil.NS_AUTH)
        self.assertEqual(results[1].signed_xml.tag, XA + 'SignedProperties')

    def test_xmlsec1(self):
        self.assertXMLSec1Accepts(self.signed, self.cert_der)

    def test_xmlsec1_checks_signed_properties(self):
        "Negative control: xmlsec1 does check the SignedProperties digest."
        root = tree(self.signed)
        root.find('.//' + XA + 'SigningTime').text = '2026-01-15T11:58:00Z'
        ok, output = self.xmlsec1(dump(root), self.cert_der)
        self.assertFalse(ok, output)
        self.assertIn('SignedInfo References (ok/all): 1/2', output)

    def test_pitfall_reference_without_transform(self):
        """Why the SignedProperties reference names its canonicalization:
        signxml's stock XAdES signer with exclusive C14N hashes
        SignedProperties exclusively but writes no Transform, so verifiers
        apply inclusive C14N 1.0 (which adds the request's default
        namespace) and the digest fails: KSeF's bare 9105."""
        certificate = x509.load_der_x509_certificate(self.cert_der)
        signer = XAdESSigner(signature_algorithm=self.signature_method,
            c14n_algorithm=xades.EXC_C14N)
        signed = dump(signer.sign(tree(self.unsigned), key=self.key,
                cert=[certificate]))
        self.assertRefused(signed, 'xades_signed_properties_mismatch', 9105)
        ok, output = self.xmlsec1(signed, self.cert_der)
        self.assertFalse(ok, output)

    def test_tampered_content(self):
        tampered = self.signed.replace(
            b'<Nip>%s</Nip>' % NIP.encode(), b'<Nip>1111111111</Nip>')
        self.assertNotEqual(tampered, self.signed)
        self.assertRefused(tampered, 'xades_bad_digest', 9105)

    def test_tampered_challenge_whitespace(self):
        tampered = self.signed.replace(b'<Challenge>', b'<Challenge> ')
        self.assertRefused(tampered, 'xades_bad_digest', 9105)

    def test_tampered_signed_properties(self):
        root = tree(self.signed)
        root.find('.//' + XA + 'SigningTime').text = '2026-01-15T11:00:00Z'
        self.assertRefused(dump(root), 'xades_signed_properties_mismatch',
            9105)

    def xpath_variant(self, expression, prefix='ds',
            namespace=xades.NS_DS):
        """The signed request with the document reference's
        enveloped-signature transform replaced by an XPath filter."""
        root = tree(self.signed)
        transform = root.find('.//%sReference[@URI=""]/%sTransforms/%s'
            'Transform' % (DS, DS, DS))
        self.assertEqual(transform.get('Algorithm'), xades.ENVELOPED)
        transform.set('Algorithm', xades.XPATH_FILTER)
        xpath = etree.SubElement(transform, DS + 'XPath',
            nsmap={prefix: namespace})
        xpath.text = expression
        return dump(resign(root, self.key))

    def test_xpath_filter_instead_of_enveloped(self):
        """KSeF allows the XPath filter not(ancestor-or-self::ds:Signature)
        in place of the enveloped-signature transform; xmlsec1 agrees
        that the signature is valid."""
        signed = self.xpath_variant(' not(ancestor-or-self::ds:Signature) ')
        verified = self.verify(signed)
        self.assertEqual(verified.context, ('nip', NIP))
        self.assertXMLSec1Accepts(signed, self.cert_der)
        other_prefix = self.xpath_variant(
            'not(ancestor-or-self::dsig:Signature)', prefix='dsig')
        self.assertEqual(self.verify(other_prefix).challenge, CHALLENGE)

    def test_other_xpath_filters_refused(self):
        "Any other XPath expression is not what KSeF allows: 9105."
        for expression, prefix, namespace in [
                ('not(ancestor-or-self::ds:Object)', 'ds', xades.NS_DS),
                ('true()', 'ds', xades.NS_DS),
                ('not(ancestor-or-self::x:Signature)', 'x',
                    'urn:example:not-xmldsig'),
                ]:
            with self.subTest(expression=expression):
                self.assertRefused(self.xpath_variant(expression, prefix,
                        namespace), 'xades_unsupported', 9105)

    def enveloping(self, unsigned=None):
        """An enveloping signature (AuthTokenRequest in a ds:Object of
        the signature) made with the module's signer profile."""
        from signxml import methods
        certificate = x509.load_der_x509_certificate(self.cert_der)
        signer = xades._KSeFXAdESSigner(self.cert_der, certificate,
            SIGNING_TIME, signature_algorithm=self.signature_method,
            method=methods.enveloping)
        return dump(signer.sign(tree(unsigned or self.unsigned),
                key=self.key, always_add_key_value=False))

    def test_enveloping_accepted(self):
        "KSeF takes enveloping signatures too; xmlsec1 agrees."
        signed = self.enveloping()
        self.assertEqual(tree(signed).tag, DS + 'Signature')
        verified = self.verify(signed)
        self.assertEqual(verified.challenge, CHALLENGE)
        self.assertEqual(verified.context, ('nip', NIP))
        self.assertEqual(verified.certificate_der, self.cert_der)
        self.assertEqual(etree.QName(verified.root).localname,
            'AuthTokenRequest')
        self.assertIsNone(verified.root.find('.//' + DS + 'Signature'))
        self.assertXMLSec1Accepts(signed, self.cert_der)

    def test_enveloping_tampered(self):
        signed = self.enveloping()
        tampered = signed.replace(b'<Nip>%s</Nip>' % NIP.encode(),
            b'<Nip>1111111111</Nip>')
        self.assertNotEqual(tampered, signed)
        self.assertRefused(tampered, 'xades_bad_digest', 9105)

    def test_enveloping_unsigned_request_ignored(self):
        """A second, unsigned ds:Object holding another request is not
        read: the referenced object's request is the one returned."""
        root = tree(self.enveloping())
        extra = etree.SubElement(root, DS + 'Object')
        other = tree(request(('nip', '1111111111')))
        extra.append(other)
        verified = self.verify(dump(root))
        self.assertEqual(verified.context, ('nip', NIP))

    def test_enveloping_object_not_a_request(self):
        "The signed object must hold an AuthTokenRequest, alone."
        root = tree(self.unsigned)
        wrapper = etree.Element('{urn:example}Wrapper')
        wrapper.append(root)
        etree.SubElement(wrapper, '{urn:example}Other')
        with self.assertRaises(xades.SignatureError) as cm:
            self.verify(self.enveloping(dump(wrapper)))
        self.assertEqual(cm.exception.ksef_code, 9105)

    def test_tampered_signed_info(self):
        root = tree(self.signed)
        digest = root.find('.//' + DS + 'Reference/' + DS + 'DigestValue')
        digest.text = base64.b64encode(b'\0' * 32).decode()
        self.assertRefused(dump(root), 'xades_bad_signature_value', 9105)

    def test_tampered_signature_value(self):
        root = tree(self.signed)
        value = root.find('.//' + DS + 'SignatureValue')
        raw = bytearray(base64.b64decode(value.text))
        raw[-1] ^= 1
        value.text = base64.b64encode(bytes(raw)).decode()
        self.assertRefused(dump(root), 'xades_bad_signature_value', 9105)

    def test_swapped_certificate(self):
        "Another certificate in KeyInfo: the signature no longer verifies."
        root = tree(self.signed)
        root.find('.//' + DS + 'X509Certificate').text = (
            base64.b64encode(self.other_der).decode())
        self.assertRefused(dump(root), 'xades_bad_signature_value', 9105)

    def test_signing_certificate_mismatch(self):
        """Validly signed with key B, certificate B in KeyInfo, but the
        signed SigningCertificate names certificate A."""

        class Signer(xades._KSeFXAdESSigner):
            def _add_key_info(signer, sig_root, signing_settings):
                signer._cert_der = self.other_der
                super()._add_key_info(sig_root, signing_settings)
                signer._cert_der = self.cert_der

        certificate = xades._load_certificate(self.cert_der)
        signer = Signer(self.cert_der, certificate, SIGNING_TIME,
            signature_algorithm=self.signature_method)
        signed = dump(signer.sign(tree(self.unsigned), key=self.other_key,
                always_add_key_value=False))
        root = tree(signed)
        self.assertEqual(root.findtext('.//' + DS + 'X509Certificate'),
            base64.b64encode(self.other_der).decode())
        self.assertRefused(signed, 'xades_signing_certificate_mismatch',
            9105)

    def test_signing_certificate_v2_accepted(self):
        "The verifier takes SigningCertificateV2 too (signxml's default)."

        class Signer(xades._KSeFXAdESSigner):
            def add_signing_certificate(signer, ssp, sig_root,
                    signing_settings):
                v2 = etree.SubElement(ssp, XA + 'SigningCertificateV2')
                cert = etree.SubElement(v2, XA + 'Cert')
                digest = etree.SubElement(cert, XA + 'CertDigest')
                etree.SubElement(digest, DS + 'DigestMethod',
                    Algorithm='http://www.w3.org/2001/04/xmlenc#sha512')
                etree.SubElement(digest, DS + 'DigestValue').text = (
                    base64.b64encode(hashlib.sha512(self.cert_der).digest())
                    .decode())

        certificate = xades._load_certificate(self.cert_der)
        signer = Signer(self.cert_der, certificate, SIGNING_TIME,
            signature_algorithm=self.signature_method)
        signed = dump(signer.sign(tree(self.unsigned), key=self.key,
                always_add_key_value=False))
        self.assertEqual(self.verify(signed).context, ('nip', NIP))

    def test_wrapping_moved_content(self):
        """The classic wrapping: forged content at the root, the original
        signed content parked in a ds:Object of the signature."""
        root = tree(self.signed)
        signature = root[-1]
        original = copy.deepcopy(root)
        original.remove(original[-1])
        ds_object = etree.SubElement(signature, DS + 'Object')
        ds_object.append(original)
        root.find('.//{%s}Nip' % xmlutil.NS_AUTH).text = '1111111111'
        self.assertRefused(dump(root), 'xades_bad_digest', 9105)

    def test_wrapping_unsigned_object_ignored(self):
        """Unsigned content inside the signature is allowed by XMLDSig but
        never reaches the caller: only the signed root is returned."""
        root = tree(self.signed)
        signature = root[-1]
        forged = tree(request(('nip', '1111111111')))
        etree.SubElement(signature, DS + 'Object').append(forged)
        verified = self.verify(dump(root))
        self.assertEqual(verified.context, ('nip', NIP))
        self.assertNotIn(b'1111111111',
            etree.tostring(verified.root))

    def test_wrapping_duplicate_id(self):
        "A forged second SignedProperties with the same Id."
        root = tree(self.signed)
        signature = root[-1]
        qualifying = signature.find('.//' + XA + 'QualifyingProperties')
        forged = copy.deepcopy(qualifying)
        forged.find('.//' + XA + 'SigningTime').text = '2020-01-01T00:00:00Z'
        etree.SubElement(signature, DS + 'Object').append(forged)
        error = self.assertRefused(dump(root), 'xades_malformed', 9101)
        self.assertIn('duplicate Id', str(error))

    def test_wrapping_signature_moved_down(self):
        "The signature must be the root's own (enveloped), not nested."
        root = tree(self.signed)
        signature = root[-1]
        identifier = root.find('{%s}ContextIdentifier' % xmlutil.NS_AUTH)
        identifier.append(signature)
        self.assertRefused(dump(root), 'xades_unsupported', 9105)

    def test_doctype_refused(self):
        body = self.signed.split(b'?>', 1)[1]
        with_doctype = (b'<?xml version="1.0"?>\n'
            b'<!DOCTYPE AuthTokenRequest [<!ENTITY x "y">]>' + body)
        self.assertRefused(with_doctype, 'xades_unreadable', 21001)

    def test_not_xml(self):
        self.assertRefused(b'{"challenge": 1}', 'xades_unreadable', 21001)

    def test_no_signature(self):
        self.assertRefused(self.unsigned, 'xades_no_signature', 9102)

    def test_two_signatures(self):
        root = tree(self.signed)
        root.append(copy.deepcopy(root[-1]))
        error = self.assertRefused(dump(root), 'xades_too_many_signatures',
            9103)
        self.assertEqual(error.params, {'count': 2})

    def test_wrong_root(self):
        root = tree(self.signed)
        root.tag = '{urn:other}AuthTokenRequest'
        self.assertRefused(dump(root), 'xades_malformed', 9101)

    def test_unsupported_signature_method(self):
        root = tree(self.signed)
        root.find('.//' + DS + 'SignatureMethod').set('Algorithm',
            'http://www.w3.org/2000/09/xmldsig#hmac-sha1')
        self.assertRefused(dump(root), 'xades_unsupported', 9105)

    def test_certificate_not_valid_now(self):
        with self.assertRaises(xades.SignatureError) as cm:
            xades.verify(self.signed,
                now=datetime.datetime(2036, 1, 1, tzinfo=UTC))
        self.assertEqual(cm.exception.code, 'xades_invalid_certificate')
        self.assertEqual(cm.exception.ksef_code, 21115)

    def test_schema_invalid_content(self):
        "A well-signed request that KSeF's XSD refuses: 21401."
        unsigned = request().replace(b'certificateSubject', b'pesel')
        signed = xades.sign(unsigned, self.cert_der, self.key)
        self.assertRefused(signed, 'xades_schema_invalid', 21401)

    def test_namespace_20(self):
        "KSeF still accepts the 2.0 namespace."
        unsigned = request().replace(b'auth/token/2.1', b'auth/token/2.0')
        verified = self.verify(xades.sign(unsigned, self.cert_der, self.key))
        self.assertEqual(verified.namespace, xades.NS_AUTH_20)
        self.assertEqual(verified.context, ('nip', NIP))

    def test_sign_refuses_signed(self):
        with self.assertRaises(xades.RequestError) as cm:
            xades.sign(self.signed, self.cert_der, self.key)
        self.assertEqual(cm.exception.code, 'xades_already_signed')

    def test_sign_key_mismatch(self):
        with self.assertRaises(xades.RequestError) as cm:
            xades.sign(self.unsigned, self.cert_der, self.other_key)
        self.assertEqual(cm.exception.code, 'xades_key_mismatch')

    def test_sign_naive_time(self):
        with self.assertRaises(xades.RequestError) as cm:
            xades.sign(self.unsigned, self.cert_der, self.key,
                signing_time=datetime.datetime(2026, 1, 1))
        self.assertEqual(cm.exception.code, 'xades_signing_time')

    def test_sign_bad_certificate(self):
        with self.assertRaises(xades.RequestError) as cm:
            xades.sign(self.unsigned, b'\x30\x03\x02\x01\x01', self.key)
        self.assertEqual(cm.exception.code, 'xades_invalid_certificate')


class RSATestCase(SignVerifyMixin, unittest.TestCase):
    key_type = 'rsa'
    signature_method = 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256'

    def test_rsa_deterministic_value(self):
        "PKCS#1 v1.5 is deterministic: the whole output repeats."
        again = xades.sign(self.unsigned, self.cert_der, self.key,
            signing_time=SIGNING_TIME)
        self.assertEqual(again, self.signed)

    def test_short_key_refused(self):
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        with self.assertRaises(xades.RequestError) as cm:
            xades.sign(self.unsigned, self.cert_der, key)
        self.assertEqual(cm.exception.code, 'xades_unsupported_key')


class ECTestCase(SignVerifyMixin, unittest.TestCase):
    key_type = 'ec'
    signature_method = 'http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256'

    def test_signature_value_is_r_s(self):
        "XMLDSig 1.1 form: 64 bytes R||S for P-256, not DER."
        value = base64.b64decode(
            tree(self.signed).findtext('.//' + DS + 'SignatureValue'))
        self.assertEqual(len(value), 64)

    def test_der_signature_value_refused(self):
        "A DER-encoded ECDSA value (a common mistake) does not verify."
        from cryptography.hazmat.primitives.asymmetric import utils
        root = tree(self.signed)
        node = root.find('.//' + DS + 'SignatureValue')
        value = base64.b64decode(node.text)
        node.text = base64.b64encode(utils.encode_dss_signature(
                int.from_bytes(value[:32], 'big'),
                int.from_bytes(value[32:], 'big'))).decode()
        self.assertRefused(dump(root), 'xades_bad_signature_value', 9105)


class MFCertificateTestCase(XMLSec1Mixin, unittest.TestCase):
    """The KSeF-issued certificate of the CODE II vector: its issuer wrote
    a NULL parameter into ecdsa-with-SHA512, which cryptography refuses;
    it must be embedded and hashed as its original bytes."""

    @classmethod
    def setUpClass(cls):
        cls.cert_der, cls.key, cls.vector = mf_vector()
        cls.signed = xades.sign(request(), cls.cert_der, cls.key,
            signing_time=SIGNING_TIME)

    def test_vector_has_the_quirk(self):
        # Outer signatureAlgorithm: ecdsa-with-SHA512 followed by NULL.
        self.assertIn(bytes.fromhex('300c06082a8648ce3d0403040500'),
            self.cert_der)
        certificate = xades._load_certificate(self.cert_der)
        self.assertEqual(certificate.serial_number,
            int(self.vector['certificate_serial_hex'], 16))
        self.assertIn('CN=TI CCK KSeF', certificate.issuer.rfc4514_string())
        self.assertIsInstance(certificate.public_key(), rsa.RSAPublicKey)

    def test_original_bytes_embedded(self):
        root = tree(self.signed)
        self.assertEqual(
            base64.b64decode(root.findtext('.//' + DS + 'X509Certificate')),
            self.cert_der)
        self.assertEqual(
            root.findtext('.//' + XA + 'CertDigest/' + DS + 'DigestValue'),
            base64.b64encode(hashlib.sha256(self.cert_der).digest()).decode())
        self.assertEqual(root.findtext('.//' + DS + 'X509SerialNumber'),
            str(int(self.vector['certificate_serial_hex'], 16)))

    def test_verify(self):
        verified = xades.verify(self.signed, now=NOW)
        self.assertEqual(verified.certificate_der, self.cert_der)
        self.assertEqual(verified.context, ('nip', NIP))
        self.assertEqual(verified.signature_method,
            'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256')

    def test_xmlsec1(self):
        # The key is read from the embedded certificate; its CA (TI CCK
        # KSeF) is not at hand, so chain checks are off.
        self.assertXMLSec1Accepts(self.signed, trusted=False)


class ErrorCodesTestCase(unittest.TestCase):

    def test_every_verification_code_mapped(self):
        self.assertEqual(set(xades.SignatureError.messages),
            set(xades.KSEF_ERROR_CODES))
        for code, ksef_code in xades.KSEF_ERROR_CODES.items():
            self.assertIsInstance(ksef_code, int, code)

    def test_messages_format(self):
        error = xades.SignatureError('xades_malformed', reason="x")
        self.assertEqual(str(error), "The signed request is malformed: x")
        self.assertEqual(error.params, {'reason': "x"})
        self.assertEqual(error.ksef_code, 9101)


if __name__ == '__main__':
    unittest.main()
