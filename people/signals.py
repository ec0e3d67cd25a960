"""What the people layer tells the layers above it, as blinker signals.

``people/`` must not import the OpenID protocol (``idp/``), yet ending a log-in session
or resetting a password has protocol consequences: refresh tokens revoked, access tokens
denied, back-channel logout tokens queued. ``idp`` connects its receivers at ``init_app``
(``idp.hooks``); the people layer only sends. Receivers run synchronously, inside the
caller's transaction: what they do commits or rolls back with it.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: A log-in session ended (``sender`` is the ``LoginSession``; ``reason``, ``actor``).
#: Sent by ``people.sessions.end`` after the row is marked ended, before its audit entry.
session_ended = _signals.signal("tongban.session-ended")

#: Whoever held the account's old credentials must be out (``sender`` is the ``User``;
#: ``keep_sid`` (a session whose tokens stay, or None), ``reason``, ``actor``). Each receiver
#: returns how many token families it revoked.
credentials_revoked = _signals.signal("tongban.credentials-revoked")

#: Which of ``client_ids`` name enabled registered systems (``sender`` is the list; each
#: receiver returns a set). Used when an enterprise authorises an agent for systems.
systems_known = _signals.signal("tongban.systems-known")


#: A browser logged out of a session (``sender`` is the ended ``LoginSession``; ``continue_to``,
#: where the browser goes next, or None). Sent after the log-out committed; a receiver may
#: return a URL the browser visits first (e.g. the upstream provider's logout, ``federation/``).
logged_out = _signals.signal("tongban.logged-out")


def logout_detour(sess, continue_to: str | None) -> str | None:
    """The first URL a ``logged_out`` receiver wants the browser to visit, or None."""
    for _receiver, url in logged_out.send(sess, continue_to=continue_to):
        if url:
            return url
    return None


def revoke_credentials(user, *, keep_sid: str | None, reason: str, actor: str) -> int:
    """Send ``credentials_revoked``; the number of token families the receivers revoked."""
    return sum(int(n or 0) for _receiver, n in credentials_revoked.send(user, keep_sid=keep_sid, reason=reason,
                                                                          actor=actor))


def known_systems(client_ids: list[str]) -> set[str]:
    """The enabled registered systems among ``client_ids`` (none when nobody answers)."""
    out: set[str] = set()
    for _receiver, found in systems_known.send(list(client_ids)):
        out |= set(found or ())
    return out
