"""Store part for named volumes (mixed into :class:`~kubetrain.store.store.Store`)."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kubetrain.core.errors import ConflictError, NotFoundError
from kubetrain.store.models import VolumeRow


class VolumeStore:
    def session(self) -> Session:  # provided by Store
        raise NotImplementedError

    def create_volume(self, name: str, size_bytes: int | None, *, now: float, exist_ok: bool = False,
                      owner: str | None = None) -> VolumeRow:
        with self.session() as s:
            existing = s.scalar(select(VolumeRow).where(VolumeRow.name == name))
            if existing is not None:
                if exist_ok:
                    return existing
                raise ConflictError(f"volume {name!r} already exists; use it, or `kubetrain volume rm {name}` first")
            row = VolumeRow(name=name, size_bytes=size_bytes, created_at=now, owner=owner)
            s.add(row)
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                if exist_ok:
                    return s.scalar(select(VolumeRow).where(VolumeRow.name == name))
                raise ConflictError(f"volume {name!r} already exists") from None
            return row

    def get_volume(self, name: str) -> VolumeRow:
        with self.session() as s:
            row = s.scalar(select(VolumeRow).where(VolumeRow.name == name))
        if row is None:
            raise NotFoundError(f"volume {name!r} not found; create it with `kubetrain volume create {name}`")
        return row

    def list_volumes(self) -> list[VolumeRow]:
        with self.session() as s:
            return list(s.scalars(select(VolumeRow).order_by(VolumeRow.name)))

    def delete_volume(self, name: str) -> None:
        with self.session() as s:
            s.execute(delete(VolumeRow).where(VolumeRow.name == name))
            s.commit()
