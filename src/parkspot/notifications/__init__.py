"""Notifications kept for each user and the endpoints to read them."""
