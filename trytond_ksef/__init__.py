# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""KSeF 2.0 core: framework-free building blocks of the Tryton module `ksef`.

Nothing in this package imports trytond: FA(3), certificates, XAdES,
encryption, QR codes, KSeF numbers, deadlines, the HTTP client and the
simulator are plain Python, tested without a database.
"""
