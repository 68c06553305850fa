# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Hostile XML from the network: external entities (file and network),
entity expansion, external DTDs, deep nesting and huge bodies.

Every document from outside is parsed by `xmlutil.parse`; the client reads
every answer within `MAX_RESPONSE_SIZE`.  These tests prove that a hostile
body is refused without reading a file (an entity pointing to a temporary
file holding a marker: the marker shows up nowhere) and without a network
access (entities pointing to a local HTTP server that records every
request: it records none), and that nothing is expanded.  Control tests
show that the same documents, given to a permissive parser, do read the
file and call the server: the probes work.

The end-to-end part runs the KSeF client against the simulator's
``hostile_xml`` fault over real HTTP.
"""
import http.server
import io
import logging
import os
import tempfile
import threading
import unittest

import httpx
from lxml import etree

from trytond_ksef import xmlutil
from trytond_ksef.client import _http
from trytond_ksef.errors import OutcomeUnknown, ProtocolError
from trytond_ksef.simulator import hostile

from .test_flow import SAMPLES, FlowTestCase

MARKER = 'KSEF-XXE-MARKER-7f3a9c'


class Probe:
    """A temporary file holding `MARKER` and a local HTTP server that
    records every request (and answers with the marker)."""

    def __init__(self):
        handle, self.path = tempfile.mkstemp(suffix='.txt')
        with os.fdopen(handle, 'w') as f:
            f.write(MARKER)
        self.hits = []
        hits = self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append(self.path)
                body = ('<!ENTITY leak "%s">' % MARKER).encode()
                self.send_response(200)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(
            ('127.0.0.1', 0), Handler)
        self.url = 'http://127.0.0.1:%d' % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
            daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        os.unlink(self.path)

    def targets(self, variant):
        "The target of a hostile variant: the marker file or the server."
        if variant == 'xxe_file':
            return self.path
        return '%s/%s.dtd' % (self.url, variant)


REMOTE = ('xxe_file', 'xxe_http', 'xxe_parameter', 'external_dtd')
EXPANSION = ('billion_laughs', 'quadratic', 'deep')


class ProbeMixin:

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.probe = Probe()

    @classmethod
    def tearDownClass(cls):
        cls.probe.close()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        del self.probe.hits[:]
        # Everything the code logs while a hostile body is handled.
        self.log = io.StringIO()
        handler = logging.StreamHandler(self.log)
        root = logging.getLogger()
        level = root.level
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)

        def restore():
            root.removeHandler(handler)
            root.setLevel(level)
        self.addCleanup(restore)

    def document(self, variant, document=None):
        return hostile.body(variant, document, self.probe.targets(variant))

    def assertNothingLeaked(self, *texts):
        self.assertEqual(self.probe.hits, [])
        for text in texts + (self.log.getvalue(),):
            if isinstance(text, bytes):
                text = text.decode('utf-8', 'replace')
            self.assertNotIn(MARKER, text)


UPO = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<Potwierdzenie xmlns="http://upo.schematy.mf.gov.pl/KSeF/v4-3">'
    b'<NazwaPodmiotuPrzyjmujacego>MF</NazwaPodmiotuPrzyjmujacego>'
    b'</Potwierdzenie>')


class ParserTest(ProbeMixin, unittest.TestCase):
    "xmlutil.parse refuses every hostile variant, touching nothing."

    def test_remote_variants_refused(self):
        for variant in REMOTE:
            with self.subTest(variant=variant):
                data = self.document(variant, UPO)
                with self.assertRaises(xmlutil.XMLError) as context:
                    xmlutil.parse(data)
                self.assertNothingLeaked(str(context.exception))

    def test_expansion_variants_refused(self):
        for variant in EXPANSION:
            with self.subTest(variant=variant):
                with self.assertRaises(xmlutil.XMLError):
                    xmlutil.parse(self.document(variant, UPO))

    def test_nothing_expanded_while_parsing(self):
        """Second line of defence, under the DOCTYPE scan: the parser
        itself substitutes no entity (or libxml2 refuses the amplification
        outright) and reads nothing."""
        for variant in ('billion_laughs', 'quadratic', 'xxe_file',
                'xxe_http', 'xxe_parameter', 'external_dtd'):
            with self.subTest(variant=variant):
                try:
                    root = etree.fromstring(self.document(variant, UPO),
                        xmlutil._parser())
                except etree.XMLSyntaxError as error:
                    self.assertIn('amplification', str(error))
                    continue
                text = ''.join(root.itertext())
                self.assertNotIn('lollol', text)
                self.assertNotIn('A' * 1000, text)
                self.assertNotIn(MARKER, text)
        self.assertNothingLeaked()

    def test_doctype_in_utf16(self):
        "The scan sees a DOCTYPE in a UTF-16 document too."
        for encoding in ('utf-16-le', 'utf-16-be', 'utf-16'):
            with self.subTest(encoding=encoding):
                data = self.document('xxe_file', UPO).decode('utf-8')
                data = data.replace('encoding="UTF-8"',
                    'encoding="UTF-16"').encode(encoding)
                with self.assertRaises(xmlutil.XMLError) as context:
                    xmlutil.parse(data)
                self.assertIn('DOCTYPE', str(context.exception))
                self.assertNothingLeaked(str(context.exception))

    def test_size_bound_before_parsing(self):
        data = b''.join(hostile.huge_chunks(xmlutil.MAX_DOCUMENT_SIZE + 1))
        self.assertGreater(len(data), xmlutil.MAX_DOCUMENT_SIZE)
        with self.assertRaises(xmlutil.XMLError) as context:
            xmlutil.parse(data)
        self.assertIn('too large', str(context.exception))

    def test_depth_bounded(self):
        "huge_tree off: libxml2's depth limit applies (no DOCTYPE needed)."
        data = hostile.body('deep')
        self.assertNotIn(b'DOCTYPE', data)
        with self.assertRaises(xmlutil.XMLError):
            xmlutil.parse(data)

    def test_probes_detect_a_permissive_parser(self):
        """Control: the same documents given to a careless parser (DTDs
        loaded, entities resolved, URLs fetched by a resolver) do read the
        file and call the server, so the probes would see a leak."""
        import urllib.request

        class Fetch(etree.Resolver):
            def resolve(self, url, pubid, context):
                if url.startswith('http://'):
                    with urllib.request.urlopen(url, timeout=5) as f:
                        return self.resolve_string(f.read(), context)
                return None
        permissive = etree.XMLParser(resolve_entities=True, load_dtd=True,
            no_network=False)
        permissive.resolvers.add(Fetch())
        root = etree.fromstring(self.document('xxe_file', UPO), permissive)
        self.assertIn(MARKER, ''.join(root.itertext()))
        etree.fromstring(self.document('xxe_parameter', UPO), permissive)
        self.assertEqual(len(self.probe.hits), 1)


class HostileServerTest(ProbeMixin, FlowTestCase):
    """The KSeF client against the simulator's ``hostile_xml`` fault over
    real HTTP: the hostile UPO (or status) is refused with ProtocolError,
    nothing is read or fetched, and the next, honest answer is taken."""

    def accepted(self):
        client = self.client()
        session, sent, statuses = self.send_online(client, SAMPLES[:1])
        self.assertTrue(statuses[0].is_success, statuses[0].status)
        return client, session, statuses[0]

    def test_hostile_upo(self):
        client, session, status = self.accepted()
        for variant in REMOTE + EXPANSION:
            with self.subTest(variant=variant):
                self.simulator.faults.add('hostile_xml', mode=variant,
                    target=self.probe.targets(variant),
                    path=r'/invoices/ksef/[^/]+/upo$')
                with self.assertRaises(ProtocolError) as context:
                    client.get_invoice_upo(session,
                        ksef_number=status.ksef_number)
                self.assertNothingLeaked(str(context.exception))
        # KSeF answers honestly again: the real UPO is taken.
        upo = client.get_invoice_upo(session, ksef_number=status.ksef_number)
        self.assertIn(status.ksef_number.encode(), upo.content)
        entries = [e for e in self.simulator.log.entries()
            if e.get('fault') == 'hostile_xml'
            and e['path'].endswith('/upo')]
        self.assertEqual(len(entries), len(REMOTE + EXPANSION))

    def test_hostile_upo_download_url(self):
        "The pre-signed download URL (storage, no token) is guarded too."
        client, session, status = self.accepted()
        self.simulator.faults.add('hostile_xml', mode='xxe_file',
            target=self.probe.path, path=r'^/storage/upo/')
        with self.assertRaises(ProtocolError):
            client.download_upo(status.upo_download_url)
        self.assertNothingLeaked()

    def test_huge_upo(self):
        """A body that never ends (no Content-Length, 4x the bound): the
        client stops reading at the bound."""
        client, session, status = self.accepted()
        limit = client.http.max_response_size
        self.simulator.faults.add('hostile_xml', mode='huge',
            size=4 * limit, path=r'/upo$')
        with self.assertRaises(ProtocolError) as context:
            client.get_invoice_upo(session, ksef_number=status.ksef_number)
        self.assertIn('larger than', str(context.exception))

    def test_hostile_status(self):
        "A status (JSON) answered with hostile XML is not JSON: refused."
        client, session, status = self.accepted()
        self.simulator.faults.add('hostile_xml', mode='xxe_http',
            target=self.probe.targets('xxe_http'),
            path=r'/sessions/[^/]+/invoices/[^/]+$', method='GET')
        with self.assertRaises(ProtocolError):
            client.get_invoice_status(session, status.reference_number)
        self.assertNothingLeaked()


class BoundedReadTest(unittest.TestCase):
    "The client's size bound, on a mock transport."

    def http(self, handler, limit=1000):
        return _http.HTTP(transport=httpx.MockTransport(handler),
            retry=_http.RetryPolicy(max_attempts=1),
            max_response_size=limit)

    def test_content_length_over_bound(self):
        http = self.http(lambda request: httpx.Response(200,
                content=b'x' * 1001))
        with self.assertRaises(ProtocolError):
            http.request('GET', 'https://ksef.test/a', operation='a')

    def test_streamed_over_bound(self):
        chunks = []

        def body():
            for _ in range(100):
                chunks.append(1)
                yield b'x' * 100
        http = self.http(lambda request: httpx.Response(200,
                content=body()))
        with self.assertRaises(ProtocolError):
            http.request('GET', 'https://ksef.test/a', operation='a')
        # Reading stopped soon after the bound, not at the end.
        self.assertLess(len(chunks), 20)

    def test_compressed_bomb(self):
        "The bound counts decoded bytes: a gzip bomb is stopped."
        import gzip
        bomb = gzip.compress(b'\0' * (10 * 1000 * 1000))
        self.assertLess(len(bomb), 20000)
        http = self.http(lambda request: httpx.Response(200,
                content=bomb, headers={'Content-Encoding': 'gzip'}),
            limit=100000)
        with self.assertRaises(ProtocolError):
            http.request('GET', 'https://ksef.test/a', operation='a')

    def test_creating_call_outcome_unknown(self):
        "For a call that creates something, the outcome is unknown."
        http = self.http(lambda request: httpx.Response(200,
                content=b'x' * 2000))
        with self.assertRaises(OutcomeUnknown):
            http.request('POST', 'https://ksef.test/a', operation='a',
                creates=True)

    def test_within_bound(self):
        http = self.http(lambda request: httpx.Response(200,
                json={'a': 'b' * 500}))
        response = http.request('GET', 'https://ksef.test/a', operation='a')
        self.assertEqual(response.json(), {'a': 'b' * 500})
