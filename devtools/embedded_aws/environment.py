"""The process environment the in-process handlers read their configuration from.

All functions run in this one process, so `os.environ` holds the union of their environments; two functions
giving one variable different values cannot both be honoured and fail the deploy instead.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from devtools.embedded_aws.template import TemplateError

# Credentials moto accepts; they also keep boto3 from looking for real ones.
FAKE_AWS_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
}
# A profile or a custom endpoint would send boto3 past moto (or to a real account); unset while deployed.
UNSET_WHILE_DEPLOYED = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL")


class EnvironmentConflictError(TemplateError):
    pass


def merge_function_environments(environments: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The union of every function's variables (by logical id); raises if two disagree on a value."""
    merged: dict[str, str] = {}
    set_by: dict[str, str] = {}
    for function, variables in environments.items():
        for name, value in variables.items():
            if name in merged and merged[name] != value:
                raise EnvironmentConflictError(
                    f"{set_by[name]} sets {name}={merged[name]!r} but {function} sets {name}={value!r}; functions run"
                    " in one process here, so they must agree"
                )
            merged[name] = value
            set_by.setdefault(name, function)
    return merged


class ProcessEnvironment:
    """Changes `os.environ` and remembers what was there, to put it back on restore()."""

    def __init__(self) -> None:
        self._originals: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def apply(self, values: Mapping[str, str | None]) -> None:
        """Sets each variable (None unsets it)."""
        with self._lock:
            for name, value in values.items():
                self._originals.setdefault(name, os.environ.get(name))
                _set(name, value)

    def restore(self) -> None:
        with self._lock:
            for name, value in self._originals.items():
                _set(name, value)
            self._originals.clear()

    @contextmanager
    def overridden(self, values: Mapping[str, str | None]) -> Iterator[None]:
        """Temporarily sets variables (process-wide: handlers running on other threads see them too)."""
        with self._lock:
            previous = {name: os.environ.get(name) for name in values}
            for name, value in values.items():
                _set(name, value)
        try:
            yield
        finally:
            with self._lock:
                for name, value in previous.items():
                    _set(name, value)


def _set(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
