"""Helpers for testing this package and what is built on it, shared by tests/ and
benchmarks/ (as numpy.testing and apache_beam.testing ship with theirs): the one way to run
the command line in a subprocess (processes.py), real object-store servers on 127.0.0.1
(stores.py), a tiny guided-patchable model and small inputs (reliability.py, images.py),
synthetic audit maps and shortcut scenes (audit_data.py, patterns.py). Nothing in the
product imports it."""
