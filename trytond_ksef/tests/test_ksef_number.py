# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
import datetime
import string
import unittest

from trytond_ksef import ksef_number
from trytond_ksef.ksef_number import KsefNumberError

# PROTOCOL.md §10 (numer-ksef.md and the documentation's other examples).
DOC_NUMBERS = [
    '5265877635-20250826-0100001AF629-AF',
    '5265877635-20250626-010080DD2B5E-26',
    '5265877635-20250916-0200A0D6723E-C2',
    ]
# Numbers assigned by KSeF in MF's sample UPOs (tests/data/upo).
UPO_NUMBERS = [
    '5265877635-20250916-010040741B3E-46',
    '5265877635-20250916-0100C002FF3E-D5',
    '5265877635-20250916-02000009FF3E-FB',
    '5265877635-20250916-020000583241-84',
    ]


class CRC8Test(unittest.TestCase):

    def test_catalogue_check_value(self):
        "CRC-8/SMBUS of '123456789' is 0xF4 (CRC catalogue check value)."
        self.assertEqual(ksef_number.crc8(b'123456789'), 0xF4)
        self.assertEqual(ksef_number.crc8('123456789'), 0xF4)

    def test_empty(self):
        self.assertEqual(ksef_number.crc8(b''), 0)

    def test_doc_example(self):
        self.assertEqual(
            ksef_number.checksum('5265877635-20250826-0100001AF629'), 'AF')


class ValidateTest(unittest.TestCase):

    def test_valid_examples(self):
        for number in DOC_NUMBERS + UPO_NUMBERS:
            with self.subTest(number=number):
                self.assertTrue(ksef_number.validate(number))

    def assertCode(self, number, code):
        with self.assertRaises(KsefNumberError) as context:
            ksef_number.parse(number)
        self.assertEqual(context.exception.code, code)
        self.assertFalse(ksef_number.validate(number))
        self.assertTrue(str(context.exception))

    def test_wrong_checksum(self):
        self.assertCode('5265877635-20250826-0100001AF629-AE',
            'ksef_number_checksum')
        self.assertCode('5265877635-20250826-0100001AF628-AF',
            'ksef_number_checksum')

    def test_mf_fa3_sample_placeholders(self):
        """MF's FA(3) samples refer to corrected invoices by placeholder
        numbers whose check sum is wrong (e.g. FA_3_Przyklad_2.xml)."""
        for number in [
                '9999999999-20230908-8BEF280C8D35-4D',
                '9999999999-20230908-16B99491C78B-3D']:
            with self.subTest(number=number):
                self.assertCode(number, 'ksef_number_checksum')

    def test_length(self):
        self.assertCode('5265877635-20250826-0100001AF629-A',
            'ksef_number_length')
        self.assertCode('', 'ksef_number_length')
        # The 36-character KSeF 1.0 form the API schema still accepts.
        self.assertCode('5265877635-20250826-0100001-AF629-AF',
            'ksef_number_length')

    def test_format(self):
        for number in [
                '5265877635-20250826-0100001af629-AF',  # lowercase
                '5265877635-20250826-0100001AF629-af',
                '0265877635-20250826-0100001AF629-AF',  # NIP starts with 0
                '1005877635-20250826-0100001AF629-AF',  # NIP 2nd-3rd 00
                '5265877635-20190826-0100001AF629-AF',  # before 2020
                '5265877635-20251326-0100001AF629-AF',  # month 13
                '5265877635-20250800-0100001AF629-AF',  # day 00
                '5265877635_20250826-0100001AF629-AF',
                '5265877635-20250826-0100001AF62G-AF',
                '5265877635-20250826-0100001AF629\n-A',
                '٥265877635-20250826-0100001AF629-AF',  # Arabic digit
                ]:
            with self.subTest(number=number):
                self.assertCode(number, 'ksef_number_format')

    def test_impossible_date(self):
        number = '5265877635-20250231-0100001AF629-'
        number = number + ksef_number.checksum(number[:32])
        self.assertCode(number, 'ksef_number_date')

    def test_not_text(self):
        self.assertFalse(ksef_number.validate(None))
        self.assertFalse(ksef_number.validate(
            b'5265877635-20250826-0100001AF629-AF'))

    def test_every_single_character_change_is_detected(self):
        "CRC-8 detects every error confined to one byte (burst <= 8)."
        number = DOC_NUMBERS[0]
        alphabet = string.digits + 'ABCDEF'
        for position in range(ksef_number.DATA_LENGTH):
            if number[position] == '-':
                continue
            for char in alphabet:
                if char == number[position]:
                    continue
                changed = number[:position] + char + number[position + 1:]
                self.assertFalse(
                    ksef_number.validate(changed), changed)


class ParseTest(unittest.TestCase):

    def test_parse_doc_example(self):
        parsed = ksef_number.parse(DOC_NUMBERS[0])
        self.assertEqual(parsed.nip, '5265877635')
        self.assertEqual(parsed.date, datetime.date(2025, 8, 26))
        self.assertEqual(parsed.technical, '0100001AF629')
        self.assertEqual(parsed.crc, 'AF')
        nip, date, technical, crc = parsed
        self.assertEqual((nip, date), ('5265877635',
            datetime.date(2025, 8, 26)))


class GenerateTest(unittest.TestCase):

    def test_reproduces_doc_examples(self):
        for number in DOC_NUMBERS + UPO_NUMBERS:
            with self.subTest(number=number):
                parsed = ksef_number.parse(number)
                self.assertEqual(
                    ksef_number.generate(
                        parsed.nip, parsed.date, parsed.technical),
                    number)

    def test_round_trip_random(self):
        seen = set()
        for day in range(0, 3000, 97):
            on_date = datetime.date(2026, 1, 1) + datetime.timedelta(day)
            number = ksef_number.generate('1111111111', on_date)
            self.assertEqual(len(number), ksef_number.LENGTH)
            self.assertTrue(ksef_number.validate(number), number)
            parsed = ksef_number.parse(number)
            self.assertEqual(parsed.nip, '1111111111')
            self.assertEqual(parsed.date, on_date)
            seen.add(parsed.technical)
        self.assertGreater(len(seen), 25)

    def test_lowercase_random_part(self):
        self.assertEqual(
            ksef_number.generate(
                '5265877635', datetime.date(2025, 8, 26), '0100001af629'),
            DOC_NUMBERS[0])

    def test_datetime_uses_its_date(self):
        self.assertEqual(
            ksef_number.generate(
                '5265877635', datetime.datetime(2025, 8, 26, 23, 59),
                '0100001AF629'),
            DOC_NUMBERS[0])

    def test_errors(self):
        cases = [
            (('526587763', datetime.date(2025, 8, 26)),
                'ksef_number_invalid_nip'),
            (('0265877635', datetime.date(2025, 8, 26)),
                'ksef_number_invalid_nip'),
            (('5265877635', datetime.date(2019, 12, 31)),
                'ksef_number_invalid_date'),
            (('5265877635', datetime.date(2025, 8, 26), '0100001AF62'),
                'ksef_number_invalid_technical_part'),
            (('5265877635', datetime.date(2025, 8, 26), '0100001AF62X'),
                'ksef_number_invalid_technical_part'),
            ]
        for args, code in cases:
            with self.subTest(args=args):
                with self.assertRaises(KsefNumberError) as context:
                    ksef_number.generate(*args)
                self.assertEqual(context.exception.code, code)
        with self.assertRaises(TypeError):
            ksef_number.generate('5265877635', '2025-08-26')


if __name__ == '__main__':
    unittest.main()
