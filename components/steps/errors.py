"""Turn errors raised inside Ray tasks and actors back into rayline's own exceptions."""

from __future__ import annotations

from components.readers import SourceError
from components.validation import DataValidationError

USER_ERRORS: tuple[type[Exception], ...] = (SourceError, DataValidationError, ValueError, KeyError)


def find_user_error(exc: BaseException) -> Exception | None:
    """The first rayline/user error in an exception's cause chain (Ray wraps task errors)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        cause = getattr(e, "cause", None)
        if isinstance(cause, (SourceError, DataValidationError)):
            return cause  # the original, without Ray's traceback text around its message
        if isinstance(e, (SourceError, DataValidationError)):
            return e
        # RayTaskError.as_instanceof_cause() subclasses the cause's type; .cause holds the original.
        stack.extend([getattr(e, "cause", None), e.__cause__, e.__context__])
    return None
