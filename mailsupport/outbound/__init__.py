"""Outbound mail: the transactional outbox, notifications derived from events, the sender."""
