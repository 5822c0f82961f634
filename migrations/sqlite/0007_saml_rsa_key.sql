-- The `saml-rsa` key purpose (docs/saml.md "Signature algorithms"): an RSA-3072 key
-- pair signing SAML messages for service providers that cannot verify ECDSA. SQLite
-- cannot change a CHECK constraint, so the catalog table is rebuilt with the same
-- columns, rows and index.
CREATE TABLE keys_new (
    label        TEXT PRIMARY KEY NOT NULL,
    purpose      TEXT NOT NULL CHECK (purpose IN ('otp', 'jwt', 'saml', 'data', 'audit', 'pairwise', 'saml-rsa')),
    kid          TEXT NOT NULL DEFAULT '',
    state        TEXT NOT NULL CHECK (state IN ('next', 'active', 'retiring', 'retired')),
    created_at   INTEGER NOT NULL,
    activated_at INTEGER,
    retiring_at  INTEGER,
    retired_at   INTEGER
);
INSERT INTO keys_new (label, purpose, kid, state, created_at, activated_at, retiring_at, retired_at)
    SELECT label, purpose, kid, state, created_at, activated_at, retiring_at, retired_at FROM keys;
DROP TABLE keys;
ALTER TABLE keys_new RENAME TO keys;
-- One active key per purpose.
CREATE UNIQUE INDEX keys_one_active ON keys (purpose) WHERE state = 'active';
