"""The domain layer: the one place that changes tickets, and records an event each time.

Functions here take a session and never commit; the caller (one message, one scheduler job,
one CLI command) owns the transaction.
"""
