"""The inference gateway: Triton's HTTP protocol in front of ModelHub's Triton servers.

Routes each request to a server where the wanted version is loaded (a model name
alone means its production alias), checks the API token's infer scope, passes
Triton's answer through byte for byte and samples traffic for drift monitoring.
Routing and tokens come from memory, refreshed from the database in the background.
Run it with `python -m modelhub.gateway` (scripts/run does).
"""
