-- The audit trail partitioned by month (docs/operations.md "Audit partitions"):
-- `audit` becomes a table partitioned by RANGE (at), one partition per UTC month
-- named `audit_yYYYYmMM`, and `audit_default` for records stamped in a month that
-- has no partition yet. `symbolon audit maintain` (and a server with owner rights)
-- keeps the current and the next three months' partitions and moves what the
-- default partition holds into monthly ones (`audit_maintain_partitions`);
-- retention drops a month's partition once its archive verifies (src/store/sql.rs,
-- `drop_archived`).
--
-- The rows are copied as they are: seq, prev_hash and hash do not change, so the
-- chain and the signed checkpoints stay valid. The primary key must hold the
-- partition key: (seq, at); appenders still serialize on the advisory lock
-- (0002_audit.sql), which is what keeps seq unique and gap-free.
ALTER TABLE audit RENAME TO audit_unpartitioned;
ALTER INDEX audit_at RENAME TO audit_unpartitioned_at;

CREATE TABLE audit (
    seq       BIGINT NOT NULL CHECK (seq >= 1),
    at        BIGINT NOT NULL,
    kind      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    subject   TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL,
    PRIMARY KEY (seq, at)
) PARTITION BY RANGE (at);
CREATE INDEX audit_at ON audit (at);

-- Append-only as before (0002, 0006): UPDATE refused, DELETE only of archived records
-- other than the chain anchor. Row triggers on the partitioned table reach every
-- partition, present and future; TRUNCATE triggers do not, so each partition gets
-- its own (`audit_month_partition`, `audit_maintain_partitions`).
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_unarchived_change();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

CREATE TABLE audit_default PARTITION OF audit DEFAULT;
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit_default
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

-- The partition of the month `m` falls in; true when it was created now. As the
-- owner only: creating a partition needs ownership of `audit`.
CREATE FUNCTION audit_month_partition(m DATE) RETURNS BOOLEAN LANGUAGE plpgsql AS $$
DECLARE
    first DATE := date_trunc('month', m)::date;
    name  TEXT := 'audit_y' || to_char(m, 'YYYY') || 'm' || to_char(m, 'MM');
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF audit FOR VALUES FROM (%s) TO (%s)', name,
        extract(epoch FROM first::timestamp)::bigint,
        extract(epoch FROM (first + interval '1 month')::timestamp)::bigint);
    EXECUTE format('CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON %I '
        'FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()', name);
    RETURN true;
END
$$;

-- Maintenance at `now_unix`: moves what the default partition holds into monthly
-- partitions (detached, emptied by re-inserting through `audit`, dropped: no row is
-- deleted, so the DELETE trigger is never asked), then makes sure the current and the
-- next `ahead` months have a partition. Returns the months created (YYYY-MM) and the
-- records moved. The caller holds the audit lock (src/store/sql.rs).
CREATE FUNCTION audit_maintain_partitions(now_unix BIGINT, ahead INTEGER, OUT created TEXT[], OUT moved BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    current DATE := date_trunc('month', to_timestamp(now_unix) AT TIME ZONE 'UTC')::date;
    m DATE;
BEGIN
    created := '{}';
    moved := 0;
    IF EXISTS (SELECT 1 FROM audit_default) THEN
        ALTER TABLE audit DETACH PARTITION audit_default;
        ALTER TABLE audit_default RENAME TO audit_default_moving;
        CREATE TABLE audit_default PARTITION OF audit DEFAULT;
        CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit_default
            FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
        FOR m IN SELECT DISTINCT date_trunc('month', to_timestamp(at) AT TIME ZONE 'UTC')::date
                 FROM audit_default_moving ORDER BY 1 LOOP
            IF audit_month_partition(m) THEN
                created := created || to_char(m, 'YYYY-MM');
            END IF;
        END LOOP;
        INSERT INTO audit SELECT * FROM audit_default_moving;
        GET DIAGNOSTICS moved = ROW_COUNT;
        DROP TABLE audit_default_moving;
    END IF;
    FOR i IN 0..ahead LOOP
        m := (current + make_interval(months => i))::date;
        IF audit_month_partition(m) THEN
            created := created || to_char(m, 'YYYY-MM');
        END IF;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION audit_month_partition(DATE) FROM PUBLIC;
REVOKE ALL ON FUNCTION audit_maintain_partitions(BIGINT, INTEGER) FROM PUBLIC;

-- The existing records, each into its month's partition.
DO $$
DECLARE
    m DATE;
BEGIN
    FOR m IN SELECT DISTINCT date_trunc('month', to_timestamp(at) AT TIME ZONE 'UTC')::date
             FROM audit_unpartitioned LOOP
        PERFORM audit_month_partition(m);
    END LOOP;
END
$$;
SELECT audit_maintain_partitions(extract(epoch FROM now())::bigint, 3);
INSERT INTO audit SELECT * FROM audit_unpartitioned;
-- The grants of the old table (docs/postgres-runtime-role.sql: SELECT, INSERT for the
-- runtime role) carry over, so an upgraded cluster keeps appending.
DO $$
DECLARE
    g RECORD;
BEGIN
    FOR g IN SELECT a.privilege_type, a.grantee FROM pg_class c, aclexplode(c.relacl) a
             WHERE c.oid = CAST('audit_unpartitioned' AS regclass) AND a.grantee <> c.relowner LOOP
        IF g.grantee = 0 THEN
            EXECUTE format('GRANT %s ON audit TO PUBLIC', g.privilege_type);
        ELSE
            EXECUTE format('GRANT %s ON audit TO %I', g.privilege_type, pg_get_userbyid(g.grantee));
        END IF;
    END LOOP;
END
$$;
-- DROP fires no row or TRUNCATE trigger: the old table goes with its triggers.
DROP TABLE audit_unpartitioned;
