"""The chaos suite runs on both databases through the shared ``db_url`` and ``repo`` fixtures
of tests/conftest.py."""
