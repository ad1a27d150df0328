"""Vidline's local stack: the whole back end on one laptop, no AWS account.

`python -m devstack` runs moto in server mode, creates every resource the
apps expect, starts `chalice local` for the API, pumps SQS messages into the
worker's `on_sqs_message` handler the way Lambda would, and shows sent email
in a small web mailbox. See `devstack.stack` for the pieces and `--help` for
the knobs.

This package is deliberately light to import: `python -m devstack.pump`
runs in its own process and must not pull in moto.
"""
