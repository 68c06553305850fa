# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""UPO (Urzędowe Poświadczenie Odbioru) documents, schema upo-v4-3.

Modelled on MF's examples (tests/data/upo).  Two deliberate differences:

* ``NazwaPodmiotuPrzyjmujacego`` is ``Ministerstwo Finansów``: the XSD fixes
  that value, and TEST's " - środowisko testowe (TE)" suffix breaks
  validation (shared/ksef/README.md).  A comment in the document says it
  comes from the simulator.
* No XAdES signature: the simulator is not MF and signs nothing.
"""
from lxml import etree

from trytond_ksef import xmlutil

from .state import iso_warsaw

NS = xmlutil.NS_UPO
RECEIVER = "Ministerstwo Finansów"
COMMENT = " KSeF simulator: not an official UPO, not signed by MF "
PAGE_SIZE = 10000
CONTEXT_ELEMENTS = {
    'Nip': 'Nip',
    'InternalId': 'IdWewnetrzny',
    'NipVatUe': 'IdZlozonyVatUE',
    'PeppolId': 'IdDostawcyUslugPeppol',
    }


def _sub(parent, tag, text=None):
    element = etree.SubElement(parent, '{%s}%s' % (NS, tag))
    if text is not None:
        element.text = str(text)
    return element


def _header(session):
    root = etree.Element('{%s}Potwierdzenie' % NS, nsmap={None: NS})
    root.append(etree.Comment(COMMENT))
    _sub(root, 'NazwaPodmiotuPrzyjmujacego', RECEIVER)
    _sub(root, 'NumerReferencyjnySesji', session.reference)
    auth = _sub(root, 'Uwierzytelnienie')
    context = _sub(auth, 'IdKontekstu')
    context_type, context_value = session.auth.context
    _sub(context, CONTEXT_ELEMENTS[context_type], context_value)
    if session.auth.ksef_token_reference:
        _sub(auth, 'NumerReferencyjnyTokenaKSeF',
            session.auth.ksef_token_reference)
    else:
        _sub(auth, 'SkrotDokumentuUwierzytelniajacego',
            session.auth.document_hash)
    return root


def _structure(root, session):
    form = session.form_code
    _sub(root, 'NazwaStrukturyLogicznej', 'Schemat_%s_v%s.xsd' % (
            form['systemCode'].replace(' ', ''), form['schemaVersion']))
    _sub(root, 'KodFormularza', form['systemCode'])


def _document(root, invoice):
    doc = _sub(root, 'Dokument')
    _sub(doc, 'NipSprzedawcy', invoice.seller_nip)
    _sub(doc, 'NumerKSeFDokumentu', invoice.ksef_number)
    _sub(doc, 'NumerFaktury', invoice.invoice_number)
    _sub(doc, 'DataWystawieniaFaktury', invoice.issue_date.isoformat())
    _sub(doc, 'DataPrzeslaniaDokumentu', iso_warsaw(invoice.invoicing_date))
    _sub(doc, 'DataNadaniaNumeruKSeF', iso_warsaw(invoice.acquisition_date))
    _sub(doc, 'SkrotDokumentu', invoice.invoice_hash)
    _sub(doc, 'TrybWysylki', invoice.mode)


def _serialize(root):
    return (b'<?xml version="1.0" encoding="utf-8"?>\n'
        + etree.tostring(root, encoding='utf-8', pretty_print=True))


def invoice_upo(invoice):
    "The UPO of one accepted invoice."
    root = _header(invoice.session)
    _structure(root, invoice.session)
    _document(root, invoice)
    return _serialize(root)


def session_upo_pages(session, invoices):
    """The collective UPO of a session, in pages of at most 10 000
    documents; returns a list of XML documents (bytes)."""
    pages = []
    count = len(invoices)
    total_pages = max(1, -(-count // PAGE_SIZE))
    for page in range(total_pages):
        chunk = invoices[page * PAGE_SIZE:(page + 1) * PAGE_SIZE]
        root = _header(session)
        description = _sub(root, 'OpisPotwierdzenia')
        _sub(description, 'Strona', page + 1)
        _sub(description, 'LiczbaStron', total_pages)
        _sub(description, 'ZakresDokumentowOd', page * PAGE_SIZE + 1)
        _sub(description, 'ZakresDokumentowDo',
            page * PAGE_SIZE + len(chunk))
        _sub(description, 'CalkowitaLiczbaDokumentow', count)
        _structure(root, session)
        for invoice in chunk:
            _document(root, invoice)
        pages.append(_serialize(root))
    return pages


def errors(document):
    "XSD errors of a UPO we produced ([] when valid)."
    return xmlutil.schema_errors('upo', xmlutil.parse(document))
