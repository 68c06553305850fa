# This file is part of trytond_ksef.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""A KSeF worker in a process of its own, for tests/test_fault_matrix.py.

    python -m trytond.modules.ksef.tests.fault_worker DATABASE

The database and the [ksef] options come from the environment
(TRYTOND_DATABASE_URI, TRYTOND_DATABASE__PATH, TRYTOND_KSEF__*).  The
worker loads the pool, prints ``READY`` and waits for one command on its
standard input (so that the test starts it early and gives it work at the
chosen moment; an empty line or the end of input ends it):

``task TASK_ID``
    run the queue task TASK_ID, as trytond-worker does
    (``trytond.worker.run_task``);
``cron METHOD [OPTION=VALUE...]``
    run the scheduled task METHOD as trytond-cron does (``ir.cron``
    ``run``: run_once in a transaction of user 0 with the ``_cron``
    context, run again after a database error up to [database] retry
    times), with these [ksef] options changed.

It prints ``SENT`` with the KSeF records it sent itself (ids, comma
separated), ``RETRIES`` with the number of runs again after a database
error (cron) and ``WINDOW`` with the wall-clock start and end of the run.
"""
import sys
import time


def main(argv):
    database = argv[1]
    import trytond.config as config
    from trytond import backend
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    from trytond.worker import run_task

    Pool.start()
    pool = Pool(database)
    with Transaction().start(database, 0, readonly=True):
        pool.init()

    # Observe (never change) what this process sends.
    InvoiceKSeF = pool.get('account.invoice.ksef')
    send_one = InvoiceKSeF._ksef_send_one
    send_batch = InvoiceKSeF._ksef_send_batch
    sent = []

    def _ksef_send_one(sender, record):
        outcome = send_one(sender, record)
        if outcome == 'sent':
            sent.append(record.id)
        return outcome

    def _ksef_send_batch(sender, ids):
        result = send_batch(sender, ids)
        sent.extend(result or [])
        return result

    InvoiceKSeF._ksef_send_one = _ksef_send_one
    InvoiceKSeF._ksef_send_batch = _ksef_send_batch

    print('READY', flush=True)
    command = sys.stdin.readline().split()
    if not command:
        # Not needed: end quietly.
        return 0
    action, argument, *options = command
    for option in options:
        key, value = option.split('=', 1)
        config.set('ksef', key, value)
    start = time.time()
    retries = 0
    if action == 'task':
        run_task(pool, int(argument))
    elif action == 'cron':
        Cron = pool.get('ir.cron')
        while True:
            try:
                with Transaction().start(database, 0, context={
                            '_cron': argument, '_skip_warnings': True,
                            }) as transaction:
                    Cron.run_once(Cron.search([('method', '=', argument)]))
                    transaction.commit()
                break
            except backend.DatabaseOperationalError:
                if retries >= config.getint('database', 'retry'):
                    raise
                retries += 1
                time.sleep(0.02 * retries)
    else:
        raise SystemExit("unknown action %r" % action)
    end = time.time()
    print('SENT %s' % ','.join(map(str, sent)), flush=True)
    print('RETRIES %d' % retries, flush=True)
    print('WINDOW %r %r' % (start, end), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
