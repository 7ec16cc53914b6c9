"""Task 5: the KV-cache update kernel and the decode attention kernel."""
