"""Who may read the feed: API keys, JWTs, sessions, tickets and the endpoint policy."""
