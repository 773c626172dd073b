"""Human review: tasks, claims, approvals with four-eyes, SLA expiry and callbacks."""
