# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Safe parsing and the packaged schemas, in particular MF's anchored
patterns of the auth XSD (PeppolId, NipVatUe)."""
import os
import unittest

from lxml import etree

from trytond_ksef import xmlutil

NS = xmlutil.NS_AUTH
CHALLENGE = '20250604-CR-461EA5B000-537A6BA15D-D7'


def auth_request(tag, value):
    return (
        '<AuthTokenRequest xmlns="%s"><Challenge>%s</Challenge>'
        '<ContextIdentifier><%s>%s</%s></ContextIdentifier>'
        '<SubjectIdentifierType>certificateSubject</SubjectIdentifierType>'
        '</AuthTokenRequest>' % (NS, CHALLENGE, tag, value, tag)
        ).encode('utf-8')


def errors(tag, value):
    return xmlutil.schema_errors('auth',
        xmlutil.parse(auth_request(tag, value)))


class AuthSchemaTest(unittest.TestCase):

    def test_valid_context_identifiers(self):
        "Values KSeF documents as valid pass the auth schema."
        for tag, value in [
                ('Nip', '5265877635'),
                ('InternalId', '5265877635-12345'),
                ('NipVatUe', '5265877635-ATU12345678'),
                ('NipVatUe', '5265877635-DE123456789'),
                ('NipVatUe', '5265877635-FRAB123456789'),
                ('NipVatUe', '5265877635-XIGD123'),
                ('PeppolId', 'PPL123456'),
                ]:
            with self.subTest(tag=tag, value=value):
                self.assertEqual(errors(tag, value), [])

    def test_invalid_context_identifiers(self):
        "Wrong values are still refused, anchors written out included."
        for tag, value in [
                ('NipVatUe', '5265877635-ATU1234567'),
                ('NipVatUe', '5265877635-XX12345678'),
                ('NipVatUe', '5265877635-ATU12345678$'),
                ('NipVatUe', '0265877635-ATU12345678'),
                ('NipVatUe', '5265877635ATU12345678'),
                ('PeppolId', 'PPL12345'),
                ('PeppolId', 'PPL1234567'),
                ('PeppolId', 'XPL123456'),
                ('PeppolId', '^PPL123456$'),
                ('PeppolId', 'PPL123456$'),
                ('Nip', '0123456789'),
                ]:
            with self.subTest(tag=tag, value=value):
                self.assertNotEqual(errors(tag, value), [])

    def test_packaged_file_unchanged(self):
        "The fix is made in memory: the packaged XSD stays MF's."
        path = os.path.join(xmlutil.SCHEMA_DIR, *xmlutil.SCHEMAS['auth'])
        with open(path, 'rb') as f:
            self.assertIn(b'"^P[A-Z]{2}[0-9]{6}$"', f.read())

    def test_strip_anchors(self):
        xsd = 'http://www.w3.org/2001/XMLSchema'
        doc = etree.fromstring(
            ('<s xmlns="%s">'
                '<pattern value="^P[A-Z]{2}$"/>'
                '<pattern value="(a|b)$"/>'
                '<pattern value="[^a]b"/>'
                '<pattern value="a\\\\$"/>'
                '<pattern value="plain"/>'
                '</s>' % xsd).encode())
        self.assertEqual(xmlutil._strip_anchors(doc), 3)
        self.assertEqual([p.get('value') for p in doc],
            ['P[A-Z]{2}', '(a|b)', '[^a]b', 'a\\\\', 'plain'])

    def test_only_auth_patched(self):
        "FA(3) and UPO patterns are MF's, unchanged (none is anchored)."
        self.assertEqual(xmlutil.ANCHORED_PATTERNS, frozenset({'auth'}))
        for name in ('fa3', 'upo'):
            folder, filename = xmlutil.SCHEMAS[name]
            with open(os.path.join(xmlutil.SCHEMA_DIR, folder, filename),
                    'rb') as f:
                doc = etree.parse(f)
            self.assertEqual(xmlutil._strip_anchors(doc), 0, name)


class ParseTest(unittest.TestCase):

    def test_parse(self):
        root = xmlutil.parse(b'<a><b>x</b></a>')
        self.assertEqual(root.tag, 'a')

    def test_text_refused(self):
        with self.assertRaises(TypeError):
            xmlutil.parse('<a/>')

    def test_not_well_formed(self):
        with self.assertRaises(xmlutil.XMLError):
            xmlutil.parse(b'<a>')

    def test_doctype_refused(self):
        for data in [
                b'<!DOCTYPE a><a/>',
                b'<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>',
                b'<!DOCTYPE a SYSTEM "file:///etc/passwd"><a/>',
                ]:
            with self.subTest(data=data):
                with self.assertRaises(xmlutil.XMLError):
                    xmlutil.parse(data)

    def test_size_bound(self):
        with self.assertRaises(xmlutil.XMLError):
            xmlutil.parse(b'<a>' + b'x' * 100 + b'</a>', max_size=50)
