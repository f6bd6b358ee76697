"""What operators and their tools ask of a running ModelHub: liveness and readiness
probes, Prometheus metrics, request ids in the logs."""
