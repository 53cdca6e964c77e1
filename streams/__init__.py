"""Sentinel Stream: the online fraud scorer (decode, cache, route, score, produce, commit)."""
