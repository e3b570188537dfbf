"""Structured logs for the domain modules: they log through the standard library, and the handler's
Powertools Logger lends them its JSON format and its per-thread keys (requestId, messageId), so every line
of one request carries its requestId even when a batch runs several requests at once."""

from __future__ import annotations

import logging
from typing import Any

_service_logger: Any = None


def use_service_logger(service_logger: Any) -> None:
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    global _service_logger
    _service_logger = service_logger
    # The parent "shared" logger gets the format; every shared.* module's logger, imported now or later,
    # propagates to it.
    logging.getLogger("shared")
    copy_config_to_registered_loggers(source_logger=service_logger, include={"shared"})


def bind(**keys: str) -> None:
    """Adds keys to every log line of this thread (a batch item runs in its own thread)."""
    if _service_logger is not None:
        _service_logger.thread_safe_append_keys(**keys)


def unbind_all() -> None:
    if _service_logger is not None:
        _service_logger.thread_safe_clear_keys()
