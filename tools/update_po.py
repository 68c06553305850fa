# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Refresh locale/pl.po from the module's translatable strings.

Run with a project venv's Python from the checkout root:
    TRYTOND_DATABASE_URI=sqlite:// DB_NAME=:memory: \\
        .venv/8.2/bin/python tools/update_po.py

It activates the module in an in-memory database, lets Tryton collect every
translatable string (models, fields, selections, views, messages, menus,
buttons, wizards) and exports them with the Polish texts already in
locale/pl.po; new strings get an empty msgstr and are listed.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    from trytond.tests.test_tryton import DB_NAME, activate_module
    activate_module('ksef', lang='en')
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    with Transaction().start(DB_NAME, 0) as transaction:
        pool = Pool()
        Translation = pool.get('ir.translation')
        TranslationSet = pool.get('ir.translation.set', type='wizard')
        session_id, _, _ = TranslationSet.create()
        TranslationSet(session_id).transition_set_()
        ModelData = pool.get('ir.model.data')
        fs_ids = {}
        for data in ModelData.search([('module', '=', 'ksef')]):
            fs_ids[(data.model, data.db_id)] = data.fs_id
        sources = Translation.search([
                ('lang', '=', 'en'), ('module', '=', 'ksef')])
        entries = {}
        for translation in sources:
            context = '%s:%s:' % (translation.type, translation.name)
            if translation.res_id and translation.res_id > 0:
                model = translation.name.split(',')[0]
                fs_id = fs_ids.get((model, translation.res_id))
                if not fs_id:
                    continue
                context += fs_id
            if translation.src:
                entries[(context, translation.src)] = translation
        transaction.rollback()
    import polib
    po_path = os.path.join(ROOT, 'locale', 'pl.po')
    known = {}
    if os.path.exists(po_path):
        for entry in polib.pofile(po_path):
            known[(entry.msgctxt, entry.msgid)] = entry.msgstr
    po = polib.POFile(wrapwidth=78)
    po.metadata = {'Content-Type': 'text/plain; charset=utf-8'}
    for (context, src) in sorted(entries):
        flags = []
        try:
            src % ()
        except (ValueError, KeyError):
            pass
        except TypeError:
            flags.append('python-format')
        po.append(polib.POEntry(msgctxt=context, msgid=src,
                msgstr=known.get((context, src), ''), flags=flags))
    os.makedirs(os.path.dirname(po_path), exist_ok=True)
    po.save(po_path)
    missing = [e for e in po if not e.msgstr]
    print("%s: %d entries, %d without Polish text"
        % (os.path.relpath(po_path, ROOT), len(po), len(missing)))
    for entry in missing:
        print("  %s | %s" % (entry.msgctxt, entry.msgid[:70]))
    return 0


if __name__ == '__main__':
    sys.exit(main())
