"""Warden store."""
