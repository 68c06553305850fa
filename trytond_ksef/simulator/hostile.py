# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Hostile XML bodies for the ``hostile_xml`` fault: what a compromised
server, or anyone between KSeF and us, could answer instead of a UPO or a
status.

Variants (the fault's ``mode``):

``xxe_file``
    An external entity reading a local file (``target``: its path, default
    ``/etc/passwd``), referenced inside the document.
``xxe_http``
    An external entity fetched over the network (``target``: the URL).
``xxe_parameter``
    A parameter entity fetched over the network inside the DTD (``target``:
    the URL), the out-of-band exfiltration pattern.
``external_dtd``
    A DOCTYPE whose external subset is fetched (``target``: the URL).
``billion_laughs``
    Ten levels of ten references each: 10^9 copies of "lol" once expanded.
``quadratic``
    One 100 kB entity referenced 2 000 times (200 MB once expanded).
``deep``
    100 000 nested elements (a parser without a depth limit recurses).
``huge``
    A document of ``size`` bytes (default 32 MiB), streamed in chunks
    without a Content-Length, as a server that never stops would.

Every variant but ``huge`` keeps the real document around the payload
(with ``x-ms-meta-hash`` recomputed), so that only the parser stands
between the payload and the stored UPO.
"""
import re

from werkzeug.wrappers import Response

from trytond_ksef import crypto

from .faults import HOSTILE_MODES

VARIANTS = HOSTILE_MODES

DEFAULT_HUGE_SIZE = 32 * 1024 * 1024
_CHUNK = 64 * 1024
_DECLARATION = re.compile(rb'^\s*<\?xml[^>]*\?>\s*')
# The first element holding text: <tag>text<
_FIRST_TEXT = re.compile(
    rb'(<(?:[A-Za-z_][\w.-]*:)?[A-Za-z_][\w.-]*>)([^<]+)(<)')

_MINIMAL = (b'<Potwierdzenie xmlns="http://upo.schematy.mf.gov.pl/KSeF/v4-3">'
    b'<NazwaPodmiotuPrzyjmujacego>KSeF</NazwaPodmiotuPrzyjmujacego>'
    b'</Potwierdzenie>')


def _with_doctype(document, subset, reference=None, system=None):
    """`document` with a DOCTYPE (internal `subset`, external `system`
    identifier) and `reference` put in place of its first text."""
    document = document or _MINIMAL
    declaration = b'<?xml version="1.0" encoding="UTF-8"?>\n'
    body = _DECLARATION.sub(b'', document, count=1)
    if reference is not None:
        body, found = _FIRST_TEXT.subn(
            lambda m: m.group(1) + reference + m.group(3), body, count=1)
        if not found:
            body = body + reference
    doctype = b'<!DOCTYPE Potwierdzenie'
    if system:
        doctype += b' SYSTEM "' + system.encode('utf-8') + b'"'
    if subset:
        doctype += b' [\n' + subset + b'\n]'
    doctype += b'>\n'
    return declaration + doctype + body


def _billion_laughs():
    lines = [b'<!ENTITY lol0 "lol">']
    for level in range(1, 10):
        lines.append(b'<!ENTITY lol%d "%s">' % (level,
                b''.join(b'&lol%d;' % (level - 1) for _ in range(10))))
    return b'\n'.join(lines)


def body(variant, document=None, target=None):
    "The hostile bytes of `variant` around `document` (not for 'huge')."
    if variant == 'xxe_file':
        path = target or '/etc/passwd'
        url = path if '://' in path else 'file://' + path
        return _with_doctype(document,
            b'<!ENTITY xxe SYSTEM "' + url.encode('utf-8') + b'">', b'&xxe;')
    if variant == 'xxe_http':
        return _with_doctype(document,
            b'<!ENTITY xxe SYSTEM "' + target.encode('utf-8') + b'">',
            b'&xxe;')
    if variant == 'xxe_parameter':
        return _with_doctype(document,
            b'<!ENTITY % remote SYSTEM "' + target.encode('utf-8')
            + b'">\n%remote;')
    if variant == 'external_dtd':
        return _with_doctype(document, None, system=target)
    if variant == 'billion_laughs':
        return _with_doctype(document, _billion_laughs(), b'&lol9;')
    if variant == 'quadratic':
        return _with_doctype(document,
            b'<!ENTITY big "' + b'A' * 100000 + b'">', b'&big;' * 2000)
    if variant == 'deep':
        depth = 100000
        return (b'<?xml version="1.0" encoding="UTF-8"?>\n'
            + b'<a>' * depth + b'x' + b'</a>' * depth)
    raise ValueError("unknown hostile XML variant %r" % variant)


def huge_chunks(size=None):
    "A well-formed document of `size` bytes, in chunks."
    size = size or DEFAULT_HUGE_SIZE
    head = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<Potwierdzenie xmlns="http://upo.schematy.mf.gov.pl/KSeF/v4-3">'
        b'<NazwaPodmiotuPrzyjmujacego>')
    tail = b'</NazwaPodmiotuPrzyjmujacego></Potwierdzenie>'
    yield head
    left = max(0, size - len(head) - len(tail))
    block = b'A' * _CHUNK
    while left > 0:
        chunk = block[:left]
        left -= len(chunk)
        yield chunk
    yield tail


def response(fault, original):
    """The werkzeug Response that replaces `original` (a 2xx Response)
    for `fault` (kind 'hostile_xml', variant in its ``mode``)."""
    if fault.mode == 'huge':
        # No Content-Length: the client must stop reading by itself.
        return Response(huge_chunks(fault.size), 200,
            mimetype='application/xml', direct_passthrough=True)
    document = original.get_data()
    if not document.lstrip().startswith((b'<', b'\xef\xbb\xbf<')):
        document = None  # a JSON answer: the payload wraps a bare UPO
    data = body(fault.mode, document, fault.target)
    return Response(data, 200, mimetype='application/xml',
        headers={'x-ms-meta-hash': crypto.sha256_b64(data)})
