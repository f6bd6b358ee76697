"""Alert emails: subject, text and HTML from templates/alerts/, sent through Django's email API."""

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string

from modelhub.alerts.links import alert_url, target_url
from modelhub.alerts.models import AlertState, Flip


def context(flip: Flip) -> dict:
    alert = flip.alert
    rule = alert.rule
    details = {k: v for k, v in (flip.details or {}).items() if k not in {"threshold", "status"} and v is not None}
    if flip.reminder:
        headline = "STILL FIRING"
    else:
        headline = {AlertState.FIRING: "FIRING", AlertState.RESOLVED: "RESOLVED"}.get(flip.to_state, flip.to_state)
    return {
        "flip": flip,
        "alert": alert,
        "rule": rule,
        "headline": headline,
        "signal": rule.get_signal_display(),
        "server": alert.server.name if alert.server_id else (flip.details or {}).get("server", ""),
        "model": alert.model.name if alert.model_id else "",
        "version": alert.version.number if alert.version_id else "",
        "threshold": (flip.details or {}).get("threshold"),
        "details": sorted(details.items()),
        "target_url": target_url(alert),
        "alert_url": alert_url(alert),
    }


def build(flip: Flip, recipient: str) -> EmailMultiAlternatives:
    ctx = context(flip)
    subject = " ".join(render_to_string("alerts/email_subject.txt", ctx).split())  # one line, whatever the template
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string("alerts/email_body.txt", ctx),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[recipient],
    )
    message.attach_alternative(render_to_string("alerts/email_body.html", ctx), "text/html")
    return message


def send(flip: Flip, recipient: str) -> None:
    """Send one alert email; raises what the mail backend raised (SMTP refused, connection lost)."""
    build(flip, recipient).send(fail_silently=False)
