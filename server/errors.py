"""One small exception hierarchy. Each error knows its wire code and HTTP status.

BackchannelError
├── InvalidMessage   400 invalid_message  a frame or request body that is not what the protocol says
├── InvalidHost      400 invalid_host     a request for a host name that is not this site's (PUBLIC_URL)
├── Empty            422 empty            a required text is empty or whitespace only
├── Rejected         422 rejected         a word on the banned list
├── Repeat           409 repeat           the same text again from the same reader, too soon
├── TooLong          422 too_long         over a documented limit
│   └── TooLarge     413 too_long         a request body over the size cap
├── NotFound         404 not_found        unknown article, or unknown parent comment
│   └── Gone         410 gone             an article the newsroom unpublished (its comments are kept)
├── Unauthorized     401 unauthorized     not logged in as a moderator, or a wrong password
├── Forbidden        403 forbidden        Origin not allowed, CSRF token missing or wrong, a reserved name
│   ├── Banned       403 banned           the reader (or their address) is banned
│   ├── Closed       403 closed           the thread is closed (or hidden): it takes no new comments
│   └── EditWindowClosed 403 edit_window_closed  a reader's comment is past EDIT_WINDOW: no more edits
├── RateLimited      429 rate_limited     too many posts; carries retry_after seconds
├── HttpError        4xx http_error       what Starlette refused itself (a method not allowed, ...)
├── Internal         500 internal         a bug: logged, and answered without details
└── Unavailable      503 unavailable      the backend cannot take writes right now
"""

from __future__ import annotations

from typing import Any

from .i18n import ENGLISH, N_, Language


class BackchannelError(Exception):
    """`message` is the English text, and a msgid of the catalogue (`make messages` extracts the
    first argument of these classes): a reader is told it in the UI's language (`in_language`).
    Values that vary are named in it, `{limit}`, and passed as keywords, so that it stays one
    msgid whatever they are."""

    code = "error"
    status = 400

    def __init__(self, message: str, **params: Any) -> None:
        self.template = message
        self.params = params
        self.message = ENGLISH.format(message, params)
        super().__init__(self.message)

    def in_language(self, language: Language) -> str:
        return language.format(self.template, self.params)

    def to_wire(self, language: Language = ENGLISH) -> dict[str, Any]:
        return {"code": self.code, "message": self.in_language(language)}


class InvalidMessage(BackchannelError):
    code, status = "invalid_message", 400


class InvalidHost(BackchannelError):
    code, status = "invalid_host", 400


class Empty(BackchannelError):
    code, status = "empty", 422


class Rejected(BackchannelError):
    code, status = "rejected", 422


class Repeat(BackchannelError):
    code, status = "repeat", 409


class TooLong(BackchannelError):
    code, status = "too_long", 422


class TooLarge(TooLong):
    status = 413


class NotFound(BackchannelError):
    code, status = "not_found", 404


class Gone(NotFound):
    code, status = "gone", 410


class Forbidden(BackchannelError):
    code, status = "forbidden", 403


class Unauthorized(BackchannelError):
    code, status = "unauthorized", 401


class Banned(Forbidden):
    code = "banned"


class Closed(Forbidden):
    code = "closed"

    @classmethod
    def because(cls, state: str) -> Closed:
        """The refusal of a post to a thread in this state (closed or hidden)."""
        if state == "hidden":
            return cls(N_("Comments on this article are hidden: it takes no new comments."))
        return cls(N_("Comments on this article are closed: it takes no new comments."))


class EditWindowClosed(Forbidden):
    code = "edit_window_closed"


class HttpError(BackchannelError):
    code = "http_error"

    def __init__(self, message: str, status: int) -> None:
        super().__init__("{detail}", detail=message)  # Starlette's own words: not in the catalogue
        self.status = status


class Internal(BackchannelError):
    code, status = "internal", 500


class Unavailable(BackchannelError):
    code, status = "unavailable", 503


class RateLimited(BackchannelError):
    code, status = "rate_limited", 429

    def __init__(self, message: str, retry_after: int, **params: Any) -> None:
        super().__init__(message, retry_after=retry_after, **params)
        self.retry_after = retry_after

    def to_wire(self, language: Language = ENGLISH) -> dict[str, Any]:
        return {**super().to_wire(language), "retry_after": self.retry_after}
