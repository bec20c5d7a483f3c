"""The fan-out: wire framing, replay and resume, subscribers; no HTTP handler in here."""
