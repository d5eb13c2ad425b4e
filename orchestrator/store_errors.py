"""Errors of the store the API maps to HTTP 503 (the request was not applied; retry later)."""


class StoreUnavailable(RuntimeError):
    """The store cannot take writes now (disk full, database unreachable): nothing was written."""
