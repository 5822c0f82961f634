-- Same schema and semantics as migrations/sqlite/0001_init.sql.

-- Key catalog: the state of every key in the token (architecture.md §Keys).
CREATE TABLE keys (
    label        TEXT PRIMARY KEY NOT NULL,
    purpose      TEXT NOT NULL CHECK (purpose IN ('otp', 'jwt', 'saml', 'data', 'audit')),
    kid          TEXT NOT NULL DEFAULT '',
    state        TEXT NOT NULL CHECK (state IN ('next', 'active', 'retiring', 'retired')),
    created_at   BIGINT NOT NULL,
    activated_at BIGINT,
    retiring_at  BIGINT,
    retired_at   BIGINT
);
-- One active key per purpose.
CREATE UNIQUE INDEX keys_one_active ON keys (purpose) WHERE state = 'active';

-- Enrolled devices. Push token and claims are AES-GCM envelopes made in the HSM
-- with the row id as AAD.
CREATE TABLE enrollments (
    id                TEXT PRIMARY KEY NOT NULL,
    token_id          TEXT NOT NULL,
    device_id         TEXT NOT NULL UNIQUE,
    device_jwk        TEXT NOT NULL,
    device_name       TEXT NOT NULL DEFAULT '',
    status            TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'revoked')),
    status_reason     TEXT,
    push_provider     TEXT NOT NULL,
    push_token_sealed TEXT,
    claims_sealed     TEXT NOT NULL,
    claim_names       TEXT NOT NULL,
    ca_sha256         TEXT NOT NULL,
    signer_serial     TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
-- One active device per token id (protocol.md §4.2 step 4).
CREATE UNIQUE INDEX enrollments_one_active ON enrollments (token_id) WHERE status = 'active';
CREATE INDEX enrollments_signer ON enrollments (ca_sha256, signer_serial);
