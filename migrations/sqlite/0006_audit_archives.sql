-- Signed monthly archives of the audit trail (`symbolon audit archive`, docs/operations.md
-- "Audit archives and retention"). One row per archived month: the manifest as
-- signed with the HSM audit key. Append-only like the trail itself.
CREATE TABLE audit_archives (
    month      TEXT PRIMARY KEY NOT NULL,
    file       TEXT NOT NULL,
    first_seq  INTEGER NOT NULL UNIQUE CHECK (first_seq >= 1),
    last_seq   INTEGER NOT NULL CHECK (last_seq >= first_seq),
    count      INTEGER NOT NULL,
    prev_hash  TEXT NOT NULL,
    first_hash TEXT NOT NULL,
    last_hash  TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    key_label  TEXT NOT NULL,
    signature  TEXT NOT NULL
);
CREATE TRIGGER audit_archives_no_update BEFORE UPDATE ON audit_archives
BEGIN SELECT RAISE(ABORT, 'audit is append-only: UPDATE refused'); END;
CREATE TRIGGER audit_archives_no_delete BEFORE DELETE ON audit_archives
BEGIN SELECT RAISE(ABORT, 'audit is append-only: DELETE refused'); END;

-- Retention (`symbolon audit maintain`) deletes archived records: the database still
-- refuses to delete a record no recorded archive covers, and the last archived record
-- (the chain anchor the live table continues from).
DROP TRIGGER audit_no_delete;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
WHEN NOT EXISTS (SELECT 1 FROM audit_archives a WHERE OLD.seq >= a.first_seq AND OLD.seq <= a.last_seq)
    OR OLD.seq >= (SELECT MAX(last_seq) FROM audit_archives)
BEGIN SELECT RAISE(ABORT, 'audit is append-only: DELETE refused (not archived, or the chain anchor)'); END;
