"""Durable storage of every committed tick (SQLite)."""
