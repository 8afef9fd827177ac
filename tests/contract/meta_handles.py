"""Extra MetaStore handles on one backend's data, for tests that play restarts and peers."""

from __future__ import annotations

from woodpecker.meta import MetaStore, open_meta_store


class Stores:
    """``reopen()``: a new store object on the same data, as a restarted process sees it (the
    previous sqlite store is closed first: one process owns the file). ``concurrent()``: a
    store for a concurrent peer (etcd: another client; memory and sqlite: the same object)."""

    def __init__(self, kind: str, uri: str) -> None:
        self.kind, self.uri = kind, uri
        self.opened: list[MetaStore] = []

    async def reopen(self) -> MetaStore:
        if self.kind == "memory" and self.opened:
            return self.opened[0]
        if self.kind == "sqlite" and self.opened:
            await self.opened[-1].close()
        self.opened.append(open_meta_store(self.uri))
        return self.opened[-1]

    async def concurrent(self) -> MetaStore:
        if self.kind != "etcd" and self.opened:
            return self.opened[-1]
        self.opened.append(open_meta_store(self.uri))
        return self.opened[-1]

    async def close(self) -> None:
        for store in self.opened:
            await store.close()
