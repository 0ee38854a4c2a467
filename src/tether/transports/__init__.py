"""Transports move frames and decide nothing."""
