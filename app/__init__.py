"""Streaming customer-feedback processor: NPS, value, churn risk and detractor alerts."""

__version__ = "0.1.0"
