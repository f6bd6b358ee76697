"""Development tooling: never imported by ModelHub's apps, left out of the production image."""
