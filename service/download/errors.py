"""The root of the exceptions of ``service/download``.

``DownloadError``
  * ``FetchError`` (``fetch``): a download that did not finish; ``FetchRetryableError``
    (``FetchLocalError``: the local side failed, e.g. disk full), ``FetchPermanentError``
    (``untar.UnsafeMemberError``: a tar member refused), ``FetchVerifyError``.
  * ``UnsafePathError`` (``paths``, also a ``ValueError``): a destination outside the data
    directory; ``SymlinkError``: a symbolic link planted on the way.
  * ``VerificationError`` (``verify``, also a ``ValueError``): a file that is not what it should
    be (size, FITS structure).
  * ``BadHeader``, ``Truncated`` (``tarstream``): a tar stream that cannot be parsed.
"""

from __future__ import annotations


class DownloadError(Exception):
    """Something went wrong fetching, unpacking, verifying or placing a file."""
