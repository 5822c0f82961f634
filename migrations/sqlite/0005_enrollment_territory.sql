-- Token ids belong to a territory and revocations are scoped (docs/credentials.md §6
-- rules 9 and 10): an enrollment records the TSL territory of the CA that issued its
-- credential; with ca_sha256 (that CA, i.e. the TSL service) it decides which VRL may
-- suspend it.
ALTER TABLE enrollments ADD COLUMN territory TEXT NOT NULL DEFAULT '';

-- Rows enrolled before: the territory is the token id's prefix when it has the form
-- of an ICAO code and a hyphen ("AUS-..."). Rows whose token id has no such prefix
-- keep '' and no VRL can suspend them (see docs/credentials.md, notes on rules 9-10).
UPDATE enrollments
   SET territory = substr(token_id, 1, instr(token_id, '-') - 1)
 WHERE instr(token_id, '-') BETWEEN 2 AND 4
   AND substr(token_id, 1, instr(token_id, '-') - 1) NOT GLOB '*[^A-Z]*';

CREATE INDEX enrollments_vrl_scope ON enrollments (territory, ca_sha256, token_id);
