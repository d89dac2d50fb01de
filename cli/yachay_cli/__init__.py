"""The Yachay command line."""
