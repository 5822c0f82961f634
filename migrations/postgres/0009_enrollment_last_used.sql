-- When a device last signed someone in (an approved verify), for operators. Written at
-- most once per service::auth::LAST_USED_GRANULARITY per device, never on every sign-in
-- (docs/operations.md, "Operator console").
ALTER TABLE enrollments ADD COLUMN last_used_at BIGINT;
