"""On-device agent: verifies, installs, runs, health-checks and rolls back scoring modules."""
