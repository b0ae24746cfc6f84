"""Offline and periodic statistics: model fitting and the churn backtest (numpy + scipy)."""
