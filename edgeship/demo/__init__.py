"""``edgeship demo``: the whole system on one machine in one command (see ``docs/demo.md``)."""
