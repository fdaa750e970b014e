"""The chaos suite runs on both databases: the database fixtures of the service tests
(``db_url``, ``repo`` and the templates behind them), see tests/service/conftest.py."""

from tests.service.conftest import (  # noqa: F401 - fixtures, found by name
    db_url,
    postgres_server,
    postgres_template,
    repo,
    sqlite_template,
)
