"""Aggregation, the fetch loop and the tick log: from quotes to committed ticks."""
