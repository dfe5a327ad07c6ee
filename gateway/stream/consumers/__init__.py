"""Consumer kinds: pull (HTTP receive/ack), webhook (signed POSTs), postgres (materialized tables)."""
