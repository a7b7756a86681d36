"""Polling: pagination, incremental cursors, their state stores, rate limits and a tick's page walk."""
