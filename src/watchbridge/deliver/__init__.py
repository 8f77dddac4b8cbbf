"""Delivery: the outbox worker and the targets it delivers to."""
