"""The aiohttp application: REST and stream handlers, problem responses, the dashboard."""
