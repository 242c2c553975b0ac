"""The fleet dashboard served by the hub at ``/ui/`` (ADR 0031, ``docs/dashboard.md``)."""
