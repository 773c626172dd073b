"""Warden demo."""
