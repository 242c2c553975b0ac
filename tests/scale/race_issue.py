"""One side of the sequence race: re-sign every device's document ``rounds`` times, forced, on a shared database.

Run as two processes at once by ``test_replica_coordination.py``; each prints how many
documents it stored. The hub key and trust root come from the workspace, as ``hub serve``
reads them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from edgeship.hub.server import load_hub_keys
from edgeship.hub.services import HubServices
from edgeship.hub.services.link import OfflineLink
from edgeship.hub.store import HubStore
from edgeship.registry.blobs import BlobStore
from edgeship.workspace import Workspace


def main(workspace: str, db_url: str, rounds: int) -> int:
    ws = Workspace.at(Path(workspace)).require()
    root, signer = load_hub_keys(ws)
    store = HubStore(db_url)
    services = HubServices.build(store, BlobStore(ws.blobs_dir, ws.tmp_dir), root, [signer], OfflineLink(), batch=50)
    stored = sum(services.issuing.deliver_batches(None, force=True) for _ in range(rounds))
    print(stored, flush=True)
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
