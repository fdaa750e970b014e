"""The Alembic migrations of the service's schema (``env.py``, ``versions/``).

A package so that they ship in the wheel; ``service.db.migrate`` finds them through it, in a
checkout and in an installed copy alike.
"""
