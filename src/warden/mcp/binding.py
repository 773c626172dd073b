"""What an approval binds to, and the check made just before a call executes.

An approval is for one exact call: the principal, the server, the tool, a keyed digest of the
canonical arguments, the tool's description, the policy version that routed it, and an expiry.
Anything different at execution time means the call a person approved is not the call about to
run, so it does not run.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from warden.decision import Decision
from warden.ledger.canonical import NotCanonical, canonical_bytes


def keyed_digest(key: bytes, value: Any) -> str:
    """HMAC-SHA256 of the canonical JSON: equal values give equal digests, and without the key
    a guessable value (a card number, an address) cannot be confirmed from the digest."""
    try:
        data = canonical_bytes(value)
    except NotCanonical:
        data = repr(value).encode()
    return "hmac-sha256:" + hmac.new(key, data, hashlib.sha256).hexdigest()


def text_digest(text: str | None) -> str:
    """The digest of a tool's description: a changed description is a changed tool."""
    return "sha256:" + hashlib.sha256((text or "").encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Binding:
    """The identity of one tool call, as recorded in its decision's input."""

    principal: str
    server: str
    tool: str
    arguments_digest: str
    description_digest: str


def bound_to(decision: Decision) -> Binding | None:
    """The binding a decision recorded, or None if it is not a tool call's decision."""
    data = decision.input
    try:
        return Binding(
            principal=str(decision.actor),
            server=str(data["server"]),
            tool=str(data["tool"]),
            arguments_digest=str(data["arguments_digest"]),
            description_digest=str(data["description_digest"]),
        )
    except KeyError:
        return None


def mismatch(
    decision: Decision,
    call: Binding,
    *,
    live_policy: str | None,
    now: datetime,
    ttl: float,
) -> tuple[str, str] | None:
    """Why `decision` does not authorise `call` now, as (code, words for the agent); None if it
    does. The decision must be final with the outcome `execute`; the caller checks that."""
    recorded = bound_to(decision)
    if recorded is None:
        return "not_a_tool_call", f"decision {decision.id} is not a tool call's decision"
    if recorded.principal != call.principal:
        return "other_principal", "the decision was made for another agent; it cannot be used"
    if (recorded.server, recorded.tool) != (call.server, call.tool):
        return (
            "other_tool",
            f"decision {decision.id} is for {recorded.server}/{recorded.tool}, not "
            f"{call.server}/{call.tool}",
        )
    if recorded.arguments_digest != call.arguments_digest:
        return (
            "arguments_changed",
            "the arguments differ from the ones that were approved; the call was not executed. "
            "Call again without the decision id to propose the new arguments",
        )
    if recorded.description_digest != call.description_digest:
        return (
            "tool_changed",
            "the tool's description changed since the call was approved; the call was not "
            "executed. Call again to have the changed tool decided anew",
        )
    if live_policy is not None and decision.policy_version != live_policy:
        return (
            "policy_changed",
            "the policy changed since the call was approved; the call was not executed. Call "
            "again to have it decided under the current policy",
        )
    decided = decision.decided_at or decision.created_at
    if now > decided + timedelta(seconds=ttl):
        return (
            "approval_expired",
            f"the approval expired {ttl:g} s after it was given; the call was not executed. "
            "Call again to propose it anew",
        )
    return None
