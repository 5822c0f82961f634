-- The `pairwise` key purpose (docs/protocol.md §13): an HMAC key deriving pairwise
-- subjects.
ALTER TABLE keys DROP CONSTRAINT keys_purpose_check;
ALTER TABLE keys ADD CONSTRAINT keys_purpose_check
    CHECK (purpose IN ('otp', 'jwt', 'saml', 'data', 'audit', 'pairwise'));
