"""Sentinel Stream: the online fraud scorer (consume, decode, cache, route, score, produce, commit)."""
