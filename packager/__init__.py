"""Packager: turns registered models plus an entry script into signed modules and target artifacts."""
