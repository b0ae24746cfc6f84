"""Pure domain logic: no Faust, aiokafka or prometheus_client imports below this package."""
