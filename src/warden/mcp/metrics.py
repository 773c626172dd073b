"""Prometheus metrics of governed tool calls, beside the decision points' own.

Labels are the gateway, the upstream server and the tool — names from the gateway file and the
upstreams' tool lists (a call naming a tool that does not exist is answered before it counts) —
and a status or denial code from fixed sets; never an agent's argument or a decision id.

`status` is how the call ended for the agent: executed, already_executed, pending, refused
(by policy or before any decision: limits, loops, kill switches, ungoverned) or denied (a
held call a person rejected, that expired, or whose binding no longer matched). The denial
`code` says which; `rejected` counted against `reviewed` is the reviewers' override rate.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from warden.monitor.metrics import REGISTRY

TOOL_CALLS = Counter(
    "warden_tool_calls",
    "Tool calls through the gateway, by how they ended for the agent.",
    ["gateway", "server", "tool", "status"],
    registry=REGISTRY,
)
TOOL_DENIALS = Counter(
    "warden_tool_call_denials",
    "Tool calls that did not run, by reason (policy, rejected, expired, rate_limit, ...).",
    ["gateway", "server", "tool", "code"],
    registry=REGISTRY,
)
TOOL_REVIEWED = Counter(
    "warden_tool_calls_reviewed",
    "Held tool calls a person decided (approved or rejected).",
    ["gateway", "server", "tool"],
    registry=REGISTRY,
)
TOOL_SECONDS = Histogram(
    "warden_tool_call_duration_seconds",
    "Time of an executed tool call: `tool` in the upstream, `governance` the rest in the gateway.",
    ["gateway", "server", "tool", "part"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
