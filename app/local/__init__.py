"""The local single-node Kafka (KRaft) that the demo, tests and benchmarks start."""
