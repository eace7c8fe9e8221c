"""The test suite. A package, so that tests import what they share as ``tests.helpers.<module>``.

Fixtures live in ``conftest.py``; plain helpers (functions, constants, fake servers) in ``helpers/``.
"""
