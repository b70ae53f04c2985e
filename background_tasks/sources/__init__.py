"""Where documents come from besides watched folders and ``.delay()``: object stores and mail accounts.

A source lists what is new at its origin (a bucket prefix, a mail folder), records what it has
seen in the storage wing so a restart fetches nothing twice, and submits each document through
the app's publish, so every submission lands in the intake ledger. Sources never change what
they read unless a rule says so. ``status`` gathers what each kind of source reports.
"""
