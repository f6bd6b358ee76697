"""The checks: each asks one Triton server about one target and builds a
`Result` (modelhub.monitoring.record) without writing check results itself.

A pass (modelhub.monitoring.passes) fans them out and records what they found
in one `record()` call; gates and "run now" call them directly.
"""
