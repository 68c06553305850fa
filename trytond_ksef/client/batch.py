# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Batch packages: invoices zipped, split into parts, parts encrypted
(PROTOCOL.md §9).

Memory stays bounded whatever the number of invoices: the archive is
written to a temporary file one invoice at a time, then read back in
chunks that are hashed (whole archive), cut into parts and encrypted part
by part with a streaming AES encryptor into a second temporary file; the
plain archive is deleted as soon as the encrypted parts exist.  Uploads
read each encrypted part back from disk in chunks.
"""
import datetime as _dt
import hashlib
import io
import os
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field

from .. import crypto
from ..errors import BatchLimitExceeded, ConfigurationError

__all__ = ['BatchPackage', 'BatchEntry', 'BatchPart', 'DEFAULT_PART_SIZE',
    'MAX_PART_SIZE', 'MAX_PARTS', 'MAX_PACKAGE_SIZE', 'MAX_INVOICES']

# KSeF limits (PROTOCOL.md §9, §11, §16).
MAX_PART_SIZE = 100_000_000      # bytes of a part before encryption
MAX_PARTS = 50
MAX_PACKAGE_SIZE = 5_000_000_000  # bytes of the whole (plain) archive
MAX_INVOICES = 10_000            # per session, raisable per context
# [AMBIGUOUS] the 100 MB bound is stated "before encryption"; leaving one
# AES block of room keeps each *encrypted* part within 100 MB as well, so
# the package is valid under either reading.
DEFAULT_PART_SIZE = MAX_PART_SIZE - crypto.AES_BLOCK_SIZE

COMPRESSIONS = ('Zip', 'TarGz')
CHUNK_SIZE = 1024 * 1024


@dataclass(frozen=True)
class BatchEntry:
    "One invoice of the package: its file name, SHA-256 (Base64), size."
    file_name: str
    invoice_hash: str
    invoice_size: int


@dataclass(frozen=True)
class BatchPart:
    "One encrypted part: ordinal (from 1), place in the spool file, hash."
    ordinal_number: int
    offset: int
    size: int
    hash: str
    plain_size: int

    def to_json(self):
        return {'ordinalNumber': self.ordinal_number,
            'fileSize': self.size, 'fileHash': self.hash}


@dataclass
class BatchPackage:
    """A package ready for a batch session.  Build it with `build`; close
    it (or use it as a context manager) to delete its temporary file."""
    key: crypto.SymmetricKey = field(repr=False)
    compression: str
    file_size: int
    file_hash: str
    parts: tuple
    entries: tuple
    _spool: object = field(repr=False, default=None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    @property
    def closed(self):
        return self._spool is None

    def batch_file_json(self):
        "The ``batchFile`` object of POST /sessions/batch."
        return {
            'fileSize': self.file_size,
            'fileHash': self.file_hash,
            'compressionType': self.compression,
            'fileParts': [p.to_json() for p in self.parts],
            }

    def part(self, ordinal_number):
        for part in self.parts:
            if part.ordinal_number == ordinal_number:
                return part
        raise KeyError(ordinal_number)

    def iter_part(self, ordinal_number, chunk_size=CHUNK_SIZE):
        "Yield the encrypted bytes of one part, read from disk in chunks."
        if self._spool is None:
            raise ConfigurationError(reason="the batch package is closed")
        part = self.part(ordinal_number)
        position = part.offset
        end = part.offset + part.size
        spool = self._spool
        while position < end:
            # Every read seeks: two iterators may be alive across retries.
            spool.seek(position)
            chunk = spool.read(min(chunk_size, end - position))
            if not chunk:
                raise OSError("batch spool file truncated")
            position += len(chunk)
            yield chunk

    def read_part(self, ordinal_number):
        "The whole encrypted part in memory (tests, small packages)."
        return b''.join(self.iter_part(ordinal_number))

    @classmethod
    def build(cls, invoices, key=None, *, compression='Zip',
            part_size=DEFAULT_PART_SIZE, max_invoices=MAX_INVOICES,
            max_parts=MAX_PARTS, max_size=MAX_PACKAGE_SIZE,
            directory=None, timestamp=None):
        """Build a package from `invoices`: an iterable of XML bytes or of
        (file name, XML bytes) pairs (a generator keeps memory low).
        `key` is the session's SymmetricKey (a fresh one by default).
        `compression` is 'Zip' (default) or 'TarGz' (API 2.6.0).
        Raises BatchLimitExceeded past a KSeF limit."""
        if compression not in COMPRESSIONS:
            raise ConfigurationError(
                reason="unknown compression %r" % (compression,))
        if not 0 < part_size <= MAX_PART_SIZE:
            raise ConfigurationError(
                reason="part size must be 1..%d bytes" % MAX_PART_SIZE)
        key = key or crypto.SymmetricKey.generate()
        timestamp = timestamp or _dt.datetime.now()
        archive = tempfile.TemporaryFile(dir=directory)
        try:
            entries = _write_archive(archive, invoices, compression,
                max_invoices, timestamp)
            size = archive.tell()
            if size > max_size:
                raise BatchLimitExceeded(limit='package size', value=size,
                    max=max_size)
            count = -(-size // part_size)
            if count > max_parts:
                raise BatchLimitExceeded(limit='number of parts',
                    value=count, max=max_parts)
            spool = tempfile.TemporaryFile(dir=directory)
            try:
                archive.seek(0)
                file_hash, parts = _encrypt_parts(archive, spool, key,
                    part_size)
            except BaseException:
                spool.close()
                raise
        finally:
            archive.close()
        return cls(key=key, compression=compression, file_size=size,
            file_hash=file_hash, parts=tuple(parts), entries=entries,
            _spool=spool)


def _entries(invoices):
    for index, item in enumerate(invoices, 1):
        if isinstance(item, (bytes, bytearray, memoryview)):
            yield 'invoice-%05d.xml' % index, bytes(item)
        else:
            name, data = item
            yield name, bytes(data)


def _check_name(name, seen):
    if (not name or '/' in name or '\\' in name or name in ('.', '..')
            or name.startswith('.') or '\x00' in name):
        raise ConfigurationError(
            reason="unusable file name in batch: %r" % (name,))
    if len(name) > 128:
        # invoiceFileName of the invoice status holds 128 characters.
        raise ConfigurationError(
            reason="file name longer than 128 characters in batch")
    if name in seen:
        raise ConfigurationError(
            reason="duplicate file name in batch: %r" % (name,))
    seen.add(name)


def _write_archive(archive, invoices, compression, max_invoices,
        timestamp):
    entries = []
    seen = set()
    if compression == 'Zip':
        writer = zipfile.ZipFile(archive, 'w', zipfile.ZIP_DEFLATED,
            allowZip64=True)
    else:
        writer = tarfile.open(fileobj=archive, mode='w:gz',
            format=tarfile.PAX_FORMAT)
    with writer:
        for name, data in _entries(invoices):
            if len(entries) >= max_invoices:
                raise BatchLimitExceeded(limit='number of invoices',
                    value=len(entries) + 1, max=max_invoices)
            _check_name(name, seen)
            if compression == 'Zip':
                info = zipfile.ZipInfo(name, date_time=max(
                    timestamp.timetuple()[:6], (1980, 1, 1, 0, 0, 0)))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                writer.writestr(info, data)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = int(timestamp.timestamp())
                info.mode = 0o644
                writer.addfile(info, io.BytesIO(data))
            entries.append(BatchEntry(name, crypto.sha256_b64(data),
                len(data)))
    if not entries:
        raise ConfigurationError(reason="a batch needs at least one invoice")
    archive.seek(0, os.SEEK_END)
    return tuple(entries)


def _encrypt_parts(archive, spool, key, part_size):
    """One pass over the archive: hash it whole, cut it into parts of
    `part_size` plain bytes, encrypt each part with its own CBC stream
    (same key and IV, KSeF decrypts parts separately)."""
    whole = hashlib.sha256()
    parts = []
    ordinal = 0
    while True:
        remaining = part_size
        encryptor = None
        part_hash = hashlib.sha256()
        offset = spool.tell()
        plain = 0
        while remaining:
            chunk = archive.read(min(CHUNK_SIZE, remaining))
            if not chunk:
                break
            if encryptor is None:
                encryptor = key.encryptor()
            whole.update(chunk)
            remaining -= len(chunk)
            plain += len(chunk)
            out = encryptor.update(chunk)
            part_hash.update(out)
            spool.write(out)
        if encryptor is None:
            break
        out = encryptor.finalize()
        part_hash.update(out)
        spool.write(out)
        ordinal += 1
        parts.append(BatchPart(ordinal, offset, spool.tell() - offset,
            crypto.b64(part_hash.digest()), plain))
        if remaining:
            break
    spool.flush()
    return crypto.b64(whole.digest()), parts
