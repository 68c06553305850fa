# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""What KSeF does with a received invoice (PROTOCOL.md §8, §9, §11, §12).

Checks, in order, each failure ending the invoice with its status code:
decryption (435), declared size and hash of the plain file (430), XML
rules — UTF-8 without BOM, no other encoding, no processing instruction,
no discouraged character (430), the session's form code (430), the FA(3)
XSD (430), attachments (415), the seller against the context (410),
``P_1`` not after the day of acceptance (450), uniqueness of (seller NIP,
RodzajFaktury, P_2) (440).
An accepted invoice gets a KSeF number, its mode (offline when declared so
or when ``P_1`` is before the day of acceptance, Polish time) and its UPO.
"""
import datetime as dt
import io
import re
import tarfile
import zipfile

from lxml import etree

from trytond_ksef import crypto, xmlutil

from . import upo
from .state import Invoice, reference_number, status, warsaw_date

MAX_INVOICE_SIZE = 1000000
MAX_INVOICE_WITH_ATTACHMENT_SIZE = 3000000
MAX_INVOICES = 10000
MAX_PART_PLAIN_SIZE = 100000000
_ENCODING_RE = re.compile(rb'^<\?xml[^>]*encoding\s*=\s*["\']([^"\']+)["\']')
# Form codes the simulator can check (it ships the FA(3) XSD only).
FORMS = {
    ('FA (3)', '1-0E', 'FA'): ('fa3', xmlutil.NS_FA3),
    }

S_FILE = "Błąd weryfikacji pliku faktury"
S_DECRYPT = "Błąd odszyfrowania pliku"
S_SEMANTICS = "Błąd weryfikacji semantyki dokumentu faktury"


# Characters XML 1.0 discourages and KSeF refuses (§11, API 2.4.0):
# #x7F-#x84, #x86-#x9F, #xFDD0-#xFDEF and #xnFFFE-#xnFFFF of planes 1-16
# (those of plane 0 are not XML characters at all).
_DISCOURAGED_RE = re.compile('[\x7f-\x84\x86-\x9f\ufdd0-\ufdef%s]' % ''.join(
        '%s%s' % (chr(plane * 0x10000 + 0xFFFE), chr(plane * 0x10000
                + 0xFFFF)) for plane in range(1, 17)))


def xml_rules(data):
    "Problems with KSeF's XML rules (§11), [] when none."
    problems = []
    if data.startswith(b'\xef\xbb\xbf'):
        problems.append("Plik zawiera znacznik BOM.")
    match = _ENCODING_RE.match(data.lstrip(b'\xef\xbb\xbf'))
    if match and match.group(1).lower() not in (b'utf-8', b'utf8'):
        problems.append("Deklarowane kodowanie inne niż UTF-8.")
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError:
        problems.append("Nieprawidłowe kodowanie UTF-8.")
    else:
        found = _DISCOURAGED_RE.search(text)
        if found:
            problems.append("Plik zawiera niedozwolony znak U+%04X."
                % ord(found.group()))
    return problems


def _text(root, path):
    element = root.find(path, {'f': etree.QName(root).namespace})
    if element is None or element.text is None:
        return None
    return element.text.strip()


def read_invoice(root):
    "The fields KSeF uses, read from a schema-valid FA(3) invoice."
    p1 = _text(root, 'f:Fa/f:P_1')
    return {
        'seller_nip': _text(root, 'f:Podmiot1/f:DaneIdentyfikacyjne/f:NIP'),
        'number': _text(root, 'f:Fa/f:P_2'),
        'kind': _text(root, 'f:Fa/f:RodzajFaktury'),
        'issue_date': dt.date.fromisoformat(p1) if p1 else None,
        'attachment': root.find('f:Zalacznik',
            {'f': etree.QName(root).namespace}) is not None,
        }


def _fail(invoice, code, description, details=None, extensions=None):
    invoice.status = status(code, description, details, extensions)


def refuse(invoice, code):
    """Refuse `invoice` with status `code` (fault injection)."""
    descriptions = {
        430: (S_FILE, ["Faktura odrzucona przez symulator (błąd "
                "weryfikacji wstrzyknięty na żądanie)."]),
        }
    description, details = descriptions.get(code, (
            "Błąd przetwarzania faktury", ["Wstrzyknięty błąd %d." % code]))
    _fail(invoice, code, description, details)


def _has_processing_instruction(root):
    node = root.getprevious()
    while node is not None:
        if isinstance(node, etree._ProcessingInstruction):
            return True
        node = node.getprevious()
    return any(isinstance(n, etree._ProcessingInstruction)
        for n in root.iter())


def _seller_allowed(context, seller_nip):
    """Whether the context may issue invoices for `seller_nip`.  Own NIP
    (or the NIP of an InternalId / NipVatUe context); the special relations
    of §11 (VAT groups, bailiffs...) are not simulated."""
    context_type, value = context
    if context_type == 'Nip':
        return value == seller_nip
    if context_type in ('InternalId', 'NipVatUe'):
        return value.split('-', 1)[0] == seller_nip
    return False


def process_invoice(sim, invoice, plain, declared=None):
    """Run KSeF's checks on the plain bytes of `invoice` and set its final
    status.  `declared` is (size, hash) of an online send."""
    session = invoice.session
    now = sim.clock.now()
    invoice.content = None
    if declared is not None:
        size, hash_ = declared
        problems = []
        if len(plain) != size:
            problems.append("Rozmiar faktury nie zgadza się z deklarowanym.")
        if crypto.sha256_b64(plain) != hash_:
            problems.append("Skrót faktury nie zgadza się z deklarowanym.")
        if problems:
            return _fail(invoice, 430, S_FILE, problems)
    problems = xml_rules(plain)
    if problems:
        return _fail(invoice, 430, S_FILE, problems)
    try:
        root = xmlutil.parse(plain)
    except xmlutil.XMLError as exc:
        return _fail(invoice, 430, S_FILE, [str(exc)])
    if _has_processing_instruction(root):
        return _fail(invoice, 430, S_FILE,
            ["Dokument zawiera instrukcje przetwarzania."])
    form = session.form_code
    schema_name, namespace = FORMS[(form['systemCode'],
            form['schemaVersion'], form['value'])]
    if etree.QName(root).namespace != namespace:
        return _fail(invoice, 430, S_FILE,
            ["Dokument niezgodny ze schematem sesji %s."
                % form['systemCode']])
    schema_problems = xmlutil.schema_errors(schema_name, root)
    if schema_problems:
        return _fail(invoice, 430, S_FILE, [
            "%s: %s" % (line, message)
            for line, _, message in schema_problems[:20]])
    fields = read_invoice(root)
    invoice.invoice_number = fields['number']
    invoice.seller_nip = fields['seller_nip']
    invoice.issue_date = fields['issue_date']
    invoice.kind = fields['kind']
    limit = (MAX_INVOICE_WITH_ATTACHMENT_SIZE if fields['attachment']
        else MAX_INVOICE_SIZE)
    if len(plain) > limit:
        return _fail(invoice, 430, S_FILE,
            ["Przekroczono dopuszczalny rozmiar faktury (%d B)." % limit])
    if fields['attachment']:
        # Attachments: batch only (or a technical correction), and only
        # for taxpayers who enabled them (§9).
        allowed_here = session.kind == 'Batch' or invoice.corrected_hash
        if not allowed_here or fields['seller_nip'] not in sim.attachments:
            return _fail(invoice, 415,
                "Brak możliwości wysyłania faktury z załącznikiem")
    if not _seller_allowed(session.auth.context, fields['seller_nip']):
        return _fail(invoice, 410, "Nieprawidłowy zakres uprawnień", [
            "Brak uprawnień do wystawiania faktur w imieniu podmiotu %s."
            % fields['seller_nip']])
    acceptance_day = warsaw_date(invoice.invoicing_date)
    if fields['issue_date'] > acceptance_day:
        return _fail(invoice, 450, S_SEMANTICS, [
            "Data wystawienia faktury (P_1) %s jest późniejsza niż data "
            "przyjęcia %s." % (fields['issue_date'], acceptance_day)])
    original = sim.registry.duplicate_of(fields['seller_nip'],
        fields['kind'], fields['number'])
    if original is not None:
        return _fail(invoice, 440, "Duplikat faktury", [
            "Duplikat faktury. Faktura o numerze KSeF: %s została już "
            "prawidłowo przesłana do systemu w sesji: %s"
            % (original.ksef_number, original.session.reference)], {
            'originalSessionReferenceNumber': original.session.reference,
            'originalKsefNumber': original.ksef_number,
            })
    offline = invoice.offline_declared or (
        fields['issue_date'] < acceptance_day)
    invoice.mode = 'Offline' if offline else 'Online'
    invoice.ksef_number = sim.new_ksef_number(fields['seller_nip'],
        acceptance_day)
    invoice.acquisition_date = now
    # open-api: "always later than acquisitionDate" (stored just after).
    invoice.permanent_storage_date = now + dt.timedelta(milliseconds=1)
    invoice.content = plain
    invoice.status = status(200, "Sukces")
    invoice.upo = upo.invoice_upo(invoice)
    sim.check_upo(invoice.upo)
    sim.registry.add_accepted(invoice)
    if invoice.corrected_hash:
        for rejected in sim.registry.by_hash.get(invoice.corrected_hash, []):
            if not rejected.succeeded:
                rejected.corrected_by = invoice.ksef_number


def correction_refusal(sim, corrected_hash):
    """Why a technical correction of the invoice with `corrected_hash`
    cannot be sent: (code, detail) or None (§12.2)."""
    previous = sim.registry.by_hash.get(corrected_hash, [])
    if not previous:
        # [DOCS SILENT] what KSeF says of an unknown original; refuse with
        # the status code of an impossible correction.
        return 21167, "Nie znaleziono faktury o wskazanym skrócie."
    if any(i.status and i.status['code'] == 200 for i in previous):
        return 21167, ("Nie można wysłać korekty technicznej do prawidłowo "
            "przetworzonej faktury.")
    if any(i.corrected_by for i in previous):
        return 21166, ("Faktura posiada już przetworzoną prawidłowo "
            "korektę techniczną.")
    return None


def _archive_members(data, compression):
    "Yield (name, bytes) of the files in a Zip or tar.gz archive."
    limit = MAX_INVOICE_WITH_ATTACHMENT_SIZE + 1
    if compression == 'TarGz':
        with tarfile.open(fileobj=io.BytesIO(data), mode='r:gz') as archive:
            for member in archive:
                if not member.isfile():
                    continue
                handle = archive.extractfile(member)
                yield member.name, handle.read(limit)
    else:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                if info.is_dir():
                    continue
                with archive.open(info) as handle:
                    yield info.filename, handle.read(limit)


def process_batch(sim, session):
    "Process a closed batch session and set its final status (§9)."
    if session.key_error:
        session.final_status = status(415,
            "Błąd odszyfrowania dostarczonego klucza")
        return
    chunks = []
    for ordinal in sorted(session.parts):
        part = session.parts[ordinal]
        try:
            chunks.append(session.key.decrypt(part.data))
        except ValueError:
            session.final_status = status(435,
                "Błąd odszyfrowania zaszyfrowanych części archiwum",
                ["Część %d" % ordinal])
            return
    archive = b''.join(chunks)
    if len(archive) != session.file_size \
            or crypto.sha256_b64(archive) != session.file_hash:
        session.final_status = status(405,
            "Błąd weryfikacji poprawności dostarczonych elementów paczki",
            ["Rozmiar lub skrót pliku paczki nie zgadza się z deklarowanym."])
        return
    try:
        members = list(_archive_members(archive, session.compression))
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError,
            ValueError):
        session.final_status = status(430,
            "Błąd dekompresji pierwotnego archiwum")
        return
    if not members:
        session.final_status = status(440, "Sesja anulowana",
            ["Nie przesłano faktur"])
        return
    if len(members) > MAX_INVOICES:
        session.final_status = status(420,
            "Przekroczony limit faktur w sesji")
        return
    for name, plain in members:
        invoice = Invoice(
            reference=reference_number('EE', sim.clock.now()),
            ordinal=len(session.invoices) + 1,
            session=session,
            invoice_hash=crypto.sha256_b64(plain),
            invoice_size=len(plain),
            # §12.1: for a batch, acceptance is the opening of the session
            invoicing_date=session.created,
            file_name=name.rsplit('/', 1)[-1][:128],
            offline_declared=session.offline_mode,
            ready_at=session.ready_at)
        session.invoices.append(invoice)
        process_invoice(sim, invoice, plain)
        sim.registry.add_processed(invoice)
    finish(sim, session)


def finish(sim, session):
    "Final status and collective UPO of a closed session."
    accepted = [i for i in session.invoices
        if i.status and i.status['code'] == 200]
    if not session.invoices:
        session.final_status = status(440, "Sesja anulowana",
            ["Nie przesłano faktur"])
    elif not accepted:
        session.final_status = status(445,
            "Błąd weryfikacji, brak poprawnych faktur")
    else:
        description = ("Sesja wsadowa przetworzona pomyślnie"
            if session.kind == 'Batch'
            else "Sesja interaktywna przetworzona pomyślnie")
        session.final_status = status(200, description)
        pages = upo.session_upo_pages(session, accepted)
        session.upo_pages = []
        for page in pages:
            sim.check_upo(page)
            session.upo_pages.append(
                (reference_number('EU', sim.clock.now()), page))
    session.updated = sim.clock.now()

