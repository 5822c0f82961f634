-- Privileges of the runtime role that `symbolon serve` connects as (docs/cluster.md).
-- Run as the owner role, after `symbolon migrate`, in the Symbolon database:
--
--   psql "postgres://symbolon_owner@db.example/symbolon" -v runtime=symbolon -f postgres-runtime-role.sql
--
-- Run it again after each upgrade that adds tables. The audit trail is
-- SELECT + INSERT only: UPDATE, DELETE and TRUNCATE are refused by the privilege
-- system and, behind it, by the append-only triggers.

\set ON_ERROR_STOP on

GRANT USAGE ON SCHEMA public TO :"runtime";

-- Key catalog and enrollments: read, add, change state (never delete).
GRANT SELECT, INSERT, UPDATE ON keys, enrollments TO :"runtime";

-- Leases of jobs that run on one node at a time (the automatic key schedule).
GRANT SELECT, INSERT, UPDATE ON leases TO :"runtime";

-- Audit trail and its archive manifests: append-only. `audit` is partitioned by month
-- (migration 0008): the grants on the partitioned table are all that is needed, and
-- the partitions themselves get none, so this role can neither read nor change them
-- directly. Creating, detaching and dropping partitions (`symbolon audit maintain`,
-- retention) needs ownership: the owner role, never this one.
GRANT SELECT, INSERT ON audit, audit_checkpoints, audit_archives TO :"runtime";
REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON audit, audit_checkpoints, audit_archives FROM :"runtime";
-- The partition maintenance functions are the owner's (EXECUTE revoked from PUBLIC).
REVOKE ALL ON FUNCTION audit_month_partition(DATE), audit_maintain_partitions(BIGINT, INTEGER) FROM :"runtime";

-- Migration history: readable, so `symbolon` can tell the schema version.
GRANT SELECT ON _sqlx_migrations TO :"runtime";
