"""Warden api."""
