"""Take the screenshots of docs/dashboard.md: the browser tests against a real hub, broker and agent, snapping pages.

    python benchmarks/dashboard/screenshots.py            # writes docs/dashboard/*.png

It runs ``tests/ui/test_dashboard_browser.py`` (Chromium, a real ``HubServer`` on Mosquitto,
one real agent) with ``EDGESHIP_UI_SCREENSHOTS`` set, so every picture shows a page of the
same run the tests check: fleet, device (charts from the agent's telemetry), deployment,
rollout (paused) and modules.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "dashboard"


def main() -> int:
    env = {**os.environ, "EDGESHIP_UI_SCREENSHOTS": str(OUT)}
    command = [sys.executable, "-m", "pytest", "-n", "0", "-q", "-p", "no:cacheprovider",
               str(ROOT / "tests" / "ui" / "test_dashboard_browser.py")]
    done = subprocess.run(command, cwd=ROOT, env=env, check=False)
    if done.returncode == 0:
        print("screenshots in", OUT, ":", ", ".join(sorted(p.name for p in OUT.glob("*.png"))))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
