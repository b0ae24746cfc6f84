"""Realistic, seeded synthetic traffic for the demo, benchmarks and churn evaluation."""
