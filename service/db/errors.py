"""The exceptions of ``service/db``: one tree, rooted at ``RepoError``.

* ``RepoError``: a repository operation was refused.
  * ``NotFound`` (also a ``LookupError``): the job or other row does not exist (404 from the API).
  * ``InvalidTransition``: the row's state does not allow the change (409 from the API).
  * ``LeaseLost``: the caller's lease on the row was taken over (its fencing token is no longer
    current) or the row moved on while the caller worked on it; the caller drops its work.

``DatabaseURLError`` (``engine``) and ``MigrationError`` (``migrate``) are raised before any
repository exists; they are ``ValueError`` / ``RuntimeError`` subclasses, not repository errors.
"""

from __future__ import annotations


class RepoError(Exception):
    """A repository operation was refused."""


class NotFound(RepoError, LookupError):
    """The job (or other row) does not exist."""


class InvalidTransition(RepoError):
    """The requested state change is not allowed from the row's current state."""


class LeaseLost(RepoError):
    """The caller's lease was taken over (fencing token mismatch) or the row moved on.

    The one way a lost lease is reported: fenced repository methods raise it, and the stages
    raise it themselves when the group-commit recorder learns that a file's lease is gone
    (``service/stages/transfer.py``). Whoever catches it drops the work, never records it twice.
    """
