"""Warden rollout."""
