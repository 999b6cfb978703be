"""Domain error kinds. Only meterd.http.errors knows which HTTP status each one becomes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where (a field path) and what."""

    field: str
    message: str
    code: str = "invalid"

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "code": self.code, "message": self.message}


class MeterdError(Exception):
    """Base of every error meterd raises on purpose."""

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions


class ValidationError(MeterdError):
    """The caller sent something malformed. Carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem] | Problem | str, **extensions: Any) -> None:
        if isinstance(problems, str):
            problems = [Problem(field="", message=problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = problems
        detail = "; ".join(f"{p.field}: {p.message}" if p.field else p.message for p in problems)
        if any(p.field for p in problems):
            extensions.setdefault("validationErrors", [p.as_dict() for p in problems])
        super().__init__(detail, **extensions)


@dataclass
class ProblemCollector:
    """Collects problems while validating an input, then raises them all at once."""

    problems: list[Problem] = field(default_factory=list)

    def add(self, field_: str, message: str, code: str = "invalid") -> None:
        self.problems.append(Problem(field_, message, code))

    def raise_if_any(self) -> None:
        if self.problems:
            raise ValidationError(self.problems)


class NotFoundError(MeterdError):
    pass


class ConflictError(MeterdError):
    pass


class UnauthorizedError(MeterdError):
    pass


class ForbiddenError(MeterdError):
    pass


class PayloadTooLargeError(MeterdError):
    pass


class UnsupportedMediaError(MeterdError):
    """OpenMeter answers 400 for an unknown ingest content type; we keep its status."""


class NotImplementedYetError(MeterdError):
    pass


class OverloadedError(MeterdError):
    """Too much work queued: the caller should retry after `retry_after` seconds."""

    def __init__(self, detail: str, retry_after: int = 1, **extensions: Any) -> None:
        super().__init__(detail, **extensions)
        self.retry_after = retry_after


class UnavailableError(MeterdError):
    """A dependency (journal, store) cannot take work right now."""

    def __init__(self, detail: str, retry_after: int = 5, **extensions: Any) -> None:
        super().__init__(detail, **extensions)
        self.retry_after = retry_after
