"""Notifications: webhook channels, rules that watch entitlement balances, the events they raise, and the
outbox that delivers those events (signed per Standard Webhooks, retried with backoff). See README.md."""
