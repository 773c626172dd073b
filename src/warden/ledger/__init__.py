"""The tamper-evident ledger: canonical events in one hash chain."""
