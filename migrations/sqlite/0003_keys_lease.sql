-- Leases (architecture.md §Keys, "Catalog and rotation"): a named job that must run
-- on one node at a time (the automatic key schedule) is held by the node whose
-- lease has not expired. Renewed by the holder; taken over once it expires.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY NOT NULL,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
