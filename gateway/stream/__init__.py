"""The record stream: events, their fan-out to consumers, and the waiting around them."""
