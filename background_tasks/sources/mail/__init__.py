"""Mail as a source: IMAP accounts fetched by a Beat task, each mail taken exactly once.

``config`` reads the accounts, ``imap`` talks to the server (UIDs only), ``message`` reads
a mail and applies the rules, ``fetch`` runs one account (save, submit, record), ``status``
reports per account and ``tasks`` is the thin Celery task. What was taken is kept in the
storage wing (``storage/mail_messages.py``), also for mails that gave no document.
"""
