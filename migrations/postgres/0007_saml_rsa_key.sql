-- The `saml-rsa` key purpose (docs/saml.md "Signature algorithms"): an RSA-3072 key
-- pair signing SAML messages for service providers that cannot verify ECDSA.
ALTER TABLE keys DROP CONSTRAINT keys_purpose_check;
ALTER TABLE keys ADD CONSTRAINT keys_purpose_check
    CHECK (purpose IN ('otp', 'jwt', 'saml', 'data', 'audit', 'pairwise', 'saml-rsa'));
