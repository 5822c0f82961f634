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

-- Audit trail and its archive manifests: append-only. Retention (`symbolon audit
-- maintain`) deletes archived records as the owner role, never as this one.
GRANT SELECT, INSERT ON audit, audit_checkpoints, audit_archives TO :"runtime";
REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON audit, audit_checkpoints, audit_archives FROM :"runtime";

-- Migration history: readable, so `symbolon` can tell the schema version.
GRANT SELECT ON _sqlx_migrations TO :"runtime";
