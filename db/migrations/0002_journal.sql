-- 0002_journal.sql — the journal (docs/transaction-model.md), the SAF queue
-- and the STAN/RRN/txn_id leases.
--
-- The journal is append-only: a transaction's state is its latest event.
-- Two guards, because either alone has a hole:
--  * privileges: UPDATE, DELETE and TRUNCATE are revoked from the writer on
--    the parent and on every partition (ensure_journal_partition does it
--    for each new day), so the switch's own role gets "permission denied";
--  * a trigger (row-level on the parent, so PostgreSQL clones it onto every
--    partition) raises for UPDATE and DELETE whoever runs them, because an
--    owner can grant itself privileges back.  TRUNCATE is guarded by a
--    statement trigger on the parent and on each partition.
-- Retention drops whole old partitions (DETACH + DROP), which neither
-- guard blocks.  Names are schema-qualified; no BEGIN/COMMIT here.

CREATE TABLE switch.journal_event (
  business_date      date NOT NULL,
  node_id            integer NOT NULL CHECK (node_id BETWEEN 0 AND 65535),
  txn_id             bigint NOT NULL,
  event_no           integer NOT NULL CHECK (event_no >= 0),
  event              text NOT NULL CHECK (event IN (
                       'received', 'rejected', 'armed', 'forwarded',
                       'response', 'timeout', 'late_response', 'stand_in',
                       'reversal_requested', 'reversal_acked',
                       'advice_acked')),
  state              text NOT NULL CHECK (state IN (
                       'received', 'armed', 'forwarded', 'approved',
                       'declined', 'stood_in', 'timed_out',
                       'reversal_pending', 'reversed', 'rejected')),
  recorded_at        timestamptz NOT NULL DEFAULT now(),
  mti                char(4) NOT NULL CHECK (mti ~ '^[0-9]{4}$'),
  processing_code    char(6) CHECK (processing_code ~ '^[0-9]{6}$'),
  -- Money: magnitude in minor units, sign explicit (D debit, C credit),
  -- currency by ISO 4217 numeric code.  All three or none (an inquiry).
  amount_minor       bigint CHECK (amount_minor >= 0),
  sign               char(1) CHECK (sign IN ('D', 'C')),
  currency           char(3) REFERENCES switch.currencies (numeric_code),
  stan               char(6) CHECK (stan ~ '^[0-9]{6}$'),          -- DE11 to the issuer
  terminal_stan      char(6) CHECK (terminal_stan ~ '^[0-9]{6}$'), -- DE11 from the terminal
  terminal_local_at  timestamp,       -- DE12/DE13 with the inferred year
  transmission_at    timestamptz,     -- DE7 sent on the link
  rrn                char(12) CHECK (rrn ~ '^[0-9A-Za-z]{12}$'),
  auth_code          varchar(6) CHECK (auth_code ~ '^[0-9A-Za-z ]{1,6}$'),
  response_code      char(2) CHECK (response_code ~ '^[0-9A-Z]{2}$'),
  reason             text CHECK (reason ~ '^[a-z0-9_]{1,40}$'),
  terminal_id        varchar(8) CHECK (terminal_id ~ '^[0-9A-Za-z ]{1,8}$'),
  merchant_id        varchar(15) CHECK (merchant_id ~ '^[0-9A-Za-z ]{1,15}$'),
  batch_no           integer CHECK (batch_no BETWEEN 0 AND 999999),
  issuer_id          text CHECK (issuer_id ~ '^[a-z0-9_-]{1,32}$'),
  link_id            text CHECK (link_id ~ '^[a-z0-9_-]{1,32}$'),
  -- The PAN: masked (first 6 to 8 and last 4 digits), an HMAC-SHA-256
  -- under a versioned key for lookup, and encrypted under a versioned data
  -- key (HSM adapter).  No column can hold a PIN block, track data or a
  -- CVV: there is none, and every text column above is shape-checked.
  pan_masked         varchar(19) CHECK (pan_masked ~ '^[0-9]{6,8}[*]+[0-9]{4}$'
                                        AND length(pan_masked) BETWEEN 12 AND 19),
  pan_hash           bytea CHECK (octet_length(pan_hash) = 32),
  pan_hash_key_ver   integer CHECK (pan_hash_key_ver > 0),
  pan_enc            bytea CHECK (octet_length(pan_enc) BETWEEN 16 AND 128),
  pan_enc_key_ver    integer CHECK (pan_enc_key_ver > 0),
  CONSTRAINT journal_event_money_together CHECK (
    (amount_minor IS NULL) = (sign IS NULL) AND
    (amount_minor IS NULL) = (currency IS NULL)),
  CONSTRAINT journal_event_pan_hash_versioned CHECK (
    (pan_hash IS NULL) = (pan_hash_key_ver IS NULL)),
  CONSTRAINT journal_event_pan_enc_versioned CHECK (
    (pan_enc IS NULL) = (pan_enc_key_ver IS NULL)),
  -- The idempotency key: every insert is ON CONFLICT DO NOTHING on it.  It
  -- also serves "all events of a transaction" (business_date, node_id,
  -- txn_id) and so the latest state.
  CONSTRAINT journal_event_idempotency
    UNIQUE (business_date, node_id, txn_id, event_no)
) PARTITION BY RANGE (business_date);

COMMENT ON TABLE switch.journal_event IS
  'append-only transaction events, one partition per business date';

-- The only other indexes, both partial on the received event (the one row
-- per transaction that carries the RRN and the PAN), so the other events
-- pay nothing for them:
--  * RRN lookup (operators, disputes, a terminal 0400 quoting DE37), and
--    the proof that RRNs are unique per business date (transaction model).
--  * PAN-hash lookup ("every transaction of this card": operators, fraud).
-- Queries must say event = 'received' to use them.  Not indexed on
-- purpose: the issuer matching key of late responses (in-flight matching
-- is in memory; a late response scans one day's partition by link and
-- STAN, rare) and the terminal duplicate key (in memory for the day).
CREATE UNIQUE INDEX journal_event_rrn ON switch.journal_event (rrn, business_date)
  WHERE event = 'received' AND rrn IS NOT NULL;
CREATE INDEX journal_event_pan_hash ON switch.journal_event (pan_hash)
  WHERE event = 'received' AND pan_hash IS NOT NULL;

CREATE FUNCTION switch.journal_event_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'switch.journal_event is append-only: % refused on %',
    TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege',
          HINT = 'write a new event; retention drops whole partitions';
END
$$;

CREATE TRIGGER journal_event_no_update_delete
  BEFORE UPDATE OR DELETE ON switch.journal_event
  FOR EACH ROW EXECUTE FUNCTION switch.journal_event_append_only();
CREATE TRIGGER journal_event_no_truncate
  BEFORE TRUNCATE ON switch.journal_event
  FOR EACH STATEMENT EXECUTE FUNCTION switch.journal_event_append_only();

REVOKE UPDATE, DELETE, TRUNCATE ON switch.journal_event FROM switch_writer;
REVOKE ALL ON switch.journal_event FROM PUBLIC;
GRANT SELECT ON switch.journal_event TO switch_reader;

-- Makes the partition for business date d (journal_event_YYYYMMDD) unless
-- it exists; returns true when it made it.  Safe to call from several
-- nodes at once (a transaction advisory lock serialises them).  Run it for
-- today and tomorrow at start-up and at cut-over: an event for a day
-- without a partition fails ("no partition of relation ... found for row").
CREATE FUNCTION switch.ensure_journal_partition(d date) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, switch AS $$
DECLARE
  part text := 'journal_event_' || to_char(d, 'YYYYMMDD');
BEGIN
  IF d IS NULL THEN
    RAISE EXCEPTION 'ensure_journal_partition: date is null';
  END IF;
  PERFORM pg_advisory_xact_lock(91634423908179); -- 'SWMIGR' + 1
  IF to_regclass(format('switch.%I', part)) IS NOT NULL THEN
    RETURN false;
  END IF;
  EXECUTE format('CREATE TABLE switch.%I PARTITION OF switch.journal_event '
                 'FOR VALUES FROM (%L) TO (%L)', part, d, d + 1);
  EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON switch.%I FROM switch_writer', part);
  EXECUTE format('REVOKE ALL ON switch.%I FROM PUBLIC', part);
  EXECUTE format('GRANT SELECT ON switch.%I TO switch_reader', part);
  -- Statement triggers are not cloned onto partitions.
  EXECUTE format('CREATE TRIGGER journal_event_no_truncate BEFORE TRUNCATE '
                 'ON switch.%I FOR EACH STATEMENT EXECUTE FUNCTION '
                 'switch.journal_event_append_only()', part);
  RETURN true;
END
$$;
REVOKE ALL ON FUNCTION switch.ensure_journal_partition(date) FROM PUBLIC;

-- SAF: reversals and advices owed to issuers.  One row per (original,
-- kind): the reversal's identity is the original's txn_id.  Claimed with a
-- lease (owner, lease_until), never a row lock over an issuer round trip.
-- Updated in place (it is a queue, not the record: the journal is).
CREATE TABLE switch.saf (
  saf_id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  business_date      date NOT NULL,
  node_id            integer NOT NULL CHECK (node_id BETWEEN 0 AND 65535),
  txn_id             bigint NOT NULL,
  kind               text NOT NULL CHECK (kind IN ('reversal', 'advice')),
  mti                char(4) NOT NULL CHECK (mti ~ '^[0-9]{4}$'),
  link_id            text CHECK (link_id ~ '^[a-z0-9_-]{1,32}$'),
  state              text NOT NULL DEFAULT 'armed'
                     CHECK (state IN ('armed', 'live', 'acked', 'dead')),
  attempts           integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  next_attempt_at    timestamptz NOT NULL DEFAULT now(),
  owner              text CHECK (owner ~ '^[A-Za-z0-9_.:-]{1,64}$'),
  lease_until        timestamptz,
  last_response_code char(2) CHECK (last_response_code ~ '^[0-9A-Z]{2}$'),
  created_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT saf_one_per_original UNIQUE (txn_id, kind),
  CONSTRAINT saf_lease_together CHECK ((owner IS NULL) = (lease_until IS NULL))
);
-- Claiming due work: state = 'live' AND next_attempt_at <= now() ... FOR
-- UPDATE SKIP LOCKED.
CREATE INDEX saf_live_due ON switch.saf (next_attempt_at) WHERE state = 'live';
-- Recovery: armed reversals whose node's lease expired (the node died
-- between armed and response).
CREATE INDEX saf_armed_lease ON switch.saf (lease_until) WHERE state = 'armed';
GRANT SELECT ON switch.saf TO switch_reader;

-- Leases of number ranges: STAN per (node, link), RRN sequence per (node,
-- business date), txn_id counter per node.  scope is the link id (stan),
-- the business date as YYYY-MM-DD (rrn) or '' (txn_id).  A node takes a
-- range with one UPDATE ... SET lease_low = next_value, next_value =
-- next_value + n ... RETURNING; numbers of an abandoned range are skipped,
-- never reused.
CREATE TABLE switch.leases (
  kind               text NOT NULL CHECK (kind IN ('stan', 'rrn', 'txn_id')),
  node_id            integer NOT NULL CHECK (node_id BETWEEN 0 AND 65535),
  scope              text NOT NULL DEFAULT '' CHECK (length(scope) <= 32),
  next_value         bigint NOT NULL DEFAULT 1 CHECK (next_value >= 0),
  max_value          bigint NOT NULL,
  lease_low          bigint,
  lease_high         bigint,
  leased_at          timestamptz,
  wrapped_at         timestamptz, -- STAN: last wrap; no reuse within 24 h
  PRIMARY KEY (kind, node_id, scope),
  CONSTRAINT leases_scope_shape CHECK (
    (kind = 'stan' AND scope ~ '^[a-z0-9_-]{1,32}$') OR
    (kind = 'rrn' AND scope ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' AND node_id <= 99) OR
    (kind = 'txn_id' AND scope = '')),
  CONSTRAINT leases_bounds CHECK (
    next_value <= max_value + 1 AND
    (kind <> 'stan' OR max_value <= 999999) AND
    (kind <> 'rrn' OR max_value <= 999999) AND
    (kind <> 'txn_id' OR max_value <= 281474976710655)),
  CONSTRAINT leases_range CHECK (
    (lease_low IS NULL) = (lease_high IS NULL) AND
    (lease_low IS NULL OR lease_low <= lease_high))
);
GRANT SELECT ON switch.leases TO switch_reader;
