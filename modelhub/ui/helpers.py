"""What the UI's views share: where a form goes back to, a refusal on one line, a section's first rows."""

from dataclasses import dataclass

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.utils.http import url_has_allowed_host_and_scheme


def next_url(request, default: str) -> str:
    """The posted `next` (the page the form was on) when it is a page of this site, else `default`:
    never another host, so a forged form cannot make the UI an open redirect."""
    wanted = request.POST.get("next", "")
    if wanted and url_has_allowed_host_and_scheme(
        wanted, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return wanted
    return default


def form_errors(form) -> str:
    """A form's errors on one line, each after the name of its field (errors of the whole form bare)."""
    return "; ".join(
        " ".join(errors) if field == NON_FIELD_ERRORS else f"{field}: {' '.join(errors)}"
        for field, errors in form.errors.items()
    )


def refusal_text(error: Exception) -> str:
    """A service's refusal in its own words on one line, each field's message after the field's name."""
    if isinstance(error, ValidationError):
        if hasattr(error, "error_dict"):
            return "; ".join(f"{field}: {' '.join(texts)}" for field, texts in error.message_dict.items())
        return " ".join(error.messages)
    return str(error)


@dataclass
class Rows:
    rows: list
    more: bool  # whether rows were left out
    left_out: int | None = None  # how many, when counted


def first_rows(queryset, limit: int, count: bool = False) -> Rows:
    """The first `limit` rows and whether there are more, so a section costs one query however long
    its table grows; `count`: also how many more (a COUNT, only when there are more)."""
    rows = list(queryset[: limit + 1])
    if len(rows) <= limit:
        return Rows(rows, False, 0 if count else None)
    return Rows(rows[:limit], True, queryset.count() - limit if count else None)
