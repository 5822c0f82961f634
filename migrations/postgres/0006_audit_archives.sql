-- Signed monthly archives of the audit trail (`symbolon audit archive`, docs/operations.md
-- "Audit archives and retention"). One row per archived month: the manifest as
-- signed with the HSM audit key. Append-only like the trail itself; the runtime
-- role may insert and read (docs/postgres-runtime-role.sql).
CREATE TABLE audit_archives (
    month      TEXT PRIMARY KEY NOT NULL,
    file       TEXT NOT NULL,
    first_seq  BIGINT NOT NULL UNIQUE CHECK (first_seq >= 1),
    last_seq   BIGINT NOT NULL CHECK (last_seq >= first_seq),
    count      BIGINT NOT NULL,
    prev_hash  TEXT NOT NULL,
    first_hash TEXT NOT NULL,
    last_hash  TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    key_label  TEXT NOT NULL,
    signature  TEXT NOT NULL
);
CREATE TRIGGER audit_archives_append_only BEFORE UPDATE OR DELETE ON audit_archives
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_archives_no_truncate BEFORE TRUNCATE ON audit_archives
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

-- Retention (`symbolon audit maintain`, as the owner role: the runtime role has no
-- DELETE) deletes archived records. The database still refuses to delete a record no
-- recorded archive covers, and the last archived record (the chain anchor the live
-- table continues from). UPDATE and TRUNCATE stay refused.
CREATE FUNCTION audit_refuse_unarchived_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE'
        AND EXISTS (SELECT 1 FROM audit_archives a WHERE OLD.seq BETWEEN a.first_seq AND a.last_seq)
        AND OLD.seq < (SELECT max(last_seq) FROM audit_archives) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit is append-only: % refused on % (only archived records other than the chain anchor may be deleted)',
        TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
DROP TRIGGER audit_append_only ON audit;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_unarchived_change();
