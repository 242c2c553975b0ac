"""``module_parts``: the content-addressed parts each stored module names (schemaVersion 2, ADR 0028).

The hub serves a blob only when a stored module names it (``Catalog.blob_file``); a
version 2 module names its bundle, its image archive and every part, and a part two
modules share (a wheel, an unchanged model chunk, a base layer) is one blob with a
row per module.
"""

from __future__ import annotations

from sqlalchemy import ForeignKeyConstraint, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from edgeship.hub.store.models import Base

__all__ = ["ModulePartRow"]


class ModulePartRow(Base):
    __tablename__ = "module_parts"
    __table_args__ = (
        ForeignKeyConstraint(["name", "version"], ["modules.name", "modules.version"], ondelete="CASCADE"),
        Index("ix_module_parts_digest", "digest"),
    )
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(71), primary_key=True)
