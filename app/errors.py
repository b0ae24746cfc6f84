"""One error root for the service; subclasses carry behaviour flags, not just names."""

from __future__ import annotations


class ServiceError(Exception):
    """Root of every error this service raises on purpose."""

    retriable: bool = False


class ConfigError(ServiceError):
    """A setting is missing or invalid; the process must not start."""


class InvalidEventError(ServiceError):
    """An input record cannot be processed and belongs in the dead-letter topic."""

    def __init__(self, reason: str, detail: str, field: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.field = field
        where = f" at {field}" if field else ""
        super().__init__(f"{reason}{where}: {detail}")


class BrokerError(ServiceError):
    """The local Kafka broker could not be fetched, started, reached or stopped."""


class BrokerNotReadyError(BrokerError):
    """The broker did not answer a round trip before the deadline."""

    retriable = True
