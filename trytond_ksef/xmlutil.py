# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Safe XML parsing and the packaged KSeF schemas.

Every document that comes from outside (the network, a user's file) is
parsed with :func:`parse`: no DTD, no entity expansion, no network, no huge
trees, and a size bound.  The schemas shipped in ``schemas/`` are compiled
once, offline: the FA(3) XSD imports its base types by an ``http://crd.gov.pl``
URL, which a resolver maps onto the packaged copies.
"""
import functools
import os

from lxml import etree

SCHEMA_DIR = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), 'schemas')
CRD_PREFIX = ('http://crd.gov.pl/xml/schematy/dziedzinowe/mf/2022/01/05/eD/'
    'DefinicjeTypy/')
# FA(3) of 1 000 lines is about 1 MB; KSeF's own limit on an invoice is 1 MB
# without attachments and 3 MB with.  10 MB bounds anything we accept.
MAX_DOCUMENT_SIZE = 10 * 1024 * 1024

SCHEMAS = {
    'fa3': ('fa3', 'schemat_FA(3)_v1-0E.xsd'),
    'auth': ('auth', 'schemat_auth_v2-1.xsd'),
    'upo': ('upo', 'upo-v4-3.xsd'),
    }

# Schemas whose patterns MF wrote with regular-expression anchors; see
# _strip_anchors.
ANCHORED_PATTERNS = frozenset({'auth'})
NS_XSD = 'http://www.w3.org/2001/XMLSchema'

NS_FA3 = 'http://crd.gov.pl/wzor/2025/06/25/13775/'
NS_AUTH = 'http://ksef.mf.gov.pl/auth/token/2.1'
NS_UPO = 'http://upo.schematy.mf.gov.pl/KSeF/v4-3'


class XMLError(ValueError):
    "A document that is not well-formed, too large or unsafe."


# A DOCTYPE in the encodings libxml2 detects from the first bytes (ASCII
# compatible ones and UTF-16): refused before the parser sees the DTD.
_DOCTYPES = (b'<!DOCTYPE', '<!DOCTYPE'.encode('utf-16-le'),
    '<!DOCTYPE'.encode('utf-16-be'))


class _LocalCrdResolver(etree.Resolver):
    def resolve(self, url, pubid, context):
        if url and url.startswith(CRD_PREFIX):
            return self.resolve_filename(
                os.path.join(SCHEMA_DIR, 'fa3', url[len(CRD_PREFIX):]),
                context)
        return None


def _parser(**kwargs):
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False,
        huge_tree=False, remove_pis=False, **kwargs)
    return parser


def parse(data, max_size=MAX_DOCUMENT_SIZE):
    """Parse untrusted XML bytes and return the root element.

    Refuses DOCTYPE declarations altogether: KSeF documents never carry one,
    and refusing them closes every entity-expansion and XXE variant.  They
    are refused twice: by a scan of the bytes before parsing (so the DTD is
    never parsed; a "<!DOCTYPE" inside a comment or CDATA section is
    refused too, which no KSeF document has), and from the parsed tree.
    The parser itself loads no DTD, substitutes no entity and has no
    network access (libxml2 also bounds entity amplification and, without
    huge_tree, depth and text sizes).
    """
    if isinstance(data, str):
        raise TypeError("XML must be given as bytes")
    if len(data) > max_size:
        raise XMLError("document too large (%d bytes, limit %d)"
            % (len(data), max_size))
    if any(doctype in data for doctype in _DOCTYPES):
        raise XMLError("DOCTYPE declarations are not allowed")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise XMLError("not well-formed XML: %s" % exc) from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise XMLError("DOCTYPE declarations are not allowed")
    return root


def _strip_anchors(doc):
    """Remove a leading ``^`` and a trailing ``$`` from every xsd:pattern
    of `doc` (in memory; the packaged file stays MF's own).

    MF's auth XSD writes ``^P[A-Z]{2}[0-9]{6}$`` (PeppolId) and ``(...)$``
    (NipVatUe).  XSD patterns are always anchored and have no ``^``/``$``
    operators, so a conforming engine (libxml2) reads them as literal
    characters and refuses every real value, e.g. the docs' own
    ``5265877635-ATU12345678``; KSeF (.NET regular expressions) reads them
    as anchors and accepts those values.  Without them the patterns mean
    exactly what KSeF checks.  An escaped ``\\$`` is not an XSD escape,
    and a ``^`` at position 0 cannot be inside a character class, so
    nothing else is changed.  Returns the number of patterns changed.
    """
    changed = 0
    for pattern in doc.iter('{%s}pattern' % NS_XSD):
        value = pattern.get('value') or ''
        new = value[1:] if value.startswith('^') else value
        if new.endswith('$'):
            backslashes = len(new[:-1]) - len(new[:-1].rstrip('\\'))
            if backslashes % 2 == 0:
                new = new[:-1]
        if new != value:
            pattern.set('value', new)
            changed += 1
    return changed


@functools.lru_cache(maxsize=None)
def schema(name):
    """Return the compiled packaged XMLSchema `name` ('fa3', 'auth', 'upo').

    The auth schema is compiled from a copy whose pattern anchors are
    removed (:func:`_strip_anchors`): every user of it — the XAdES builder
    and verifier, the simulator — then accepts what KSeF accepts."""
    folder, filename = SCHEMAS[name]
    parser = _parser()
    parser.resolvers.add(_LocalCrdResolver())
    path = os.path.join(SCHEMA_DIR, folder, filename)
    with open(path, 'rb') as f:
        doc = etree.parse(f, parser, base_url=path)
    if name in ANCHORED_PATTERNS:
        _strip_anchors(doc)
    return etree.XMLSchema(doc)


def schema_errors(name, root):
    """Validate `root` against schema `name` and return a list of
    (line, path, message) tuples; empty when valid."""
    xsd = schema(name)
    if xsd.validate(root):
        return []
    return [(e.line, e.path, e.message) for e in xsd.error_log]
