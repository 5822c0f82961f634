-- Audit trail (architecture.md §Stores, Audit): append-only hash chain.
-- hash = SHA-256(prev_hash bytes || JCS of the event with its seq), see src/store/audit.rs.
CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY NOT NULL CHECK (seq >= 1),
    at        INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    subject   TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL UNIQUE
);
CREATE INDEX audit_at ON audit (at);

-- Signed statements "record seq has hash h", made with the HSM audit key.
CREATE TABLE audit_checkpoints (
    seq       INTEGER PRIMARY KEY NOT NULL,
    hash      TEXT NOT NULL,
    at        INTEGER NOT NULL,
    key_label TEXT NOT NULL,
    signature TEXT NOT NULL
);

-- The database refuses changes to what was written. SQLite has no TRUNCATE: a
-- DELETE without WHERE fires the DELETE trigger like any other.
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit is append-only: UPDATE refused'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit is append-only: DELETE refused'); END;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit is append-only: UPDATE refused'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit is append-only: DELETE refused'); END;
