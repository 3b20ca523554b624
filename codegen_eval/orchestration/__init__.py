"""What the flows need from Prefect beyond wiring tasks: readable run names and tags (`naming`), the
run's events and regression detection (`events`), the alert automation (`alerts`), the API key from a
Secret block (`api_key`), and a CLI that keeps Prefect's own logging out of the user's way
(`quiet_prefect`)."""
