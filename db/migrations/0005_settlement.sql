-- 0005_settlement.sql — end of day: business dates (open or closed), the
-- closing of a date's journal partition, and the settlement totals
-- (docs/settlement.md).
--
-- A date is closed by `switchctl settle --date D` (db/settle.c) in ONE
-- transaction that (1) locks the date's row in business_dates FOR UPDATE,
-- (2) calls close_business_date(D), which adds the constraint
-- journal_closed CHECK (false) NOT VALID to journal_event_YYYYMMDD, (3)
-- writes the settlement totals and (4) records the clearing file's name,
-- SHA-256 and record count with status 'closed'.  Nothing of it is
-- visible until the COMMIT, and a failure leaves the date open.  Once
-- committed, any new event into that partition fails with SQLSTATE 23514
-- on constraint journal_closed (the journal writer's DB_E_CLOSED); the
-- rows already there are untouched (NOT VALID checks no existing row).
-- Names are schema-qualified; no BEGIN/COMMIT here.

CREATE TABLE switch.business_dates (
  business_date    date PRIMARY KEY,
  status           text NOT NULL DEFAULT 'open'
                   CHECK (status IN ('open', 'closed')),
  closed_at        timestamptz,
  -- The clearing file (base name, no folder), the SHA-256 of its bytes
  -- (lower-case hex), its record count (header, transactions and
  -- adjustments, merchant summaries, trailer) and the SHA-256 of the CSV
  -- report written beside it.
  clearing_file    text CHECK (clearing_file ~ '^clearing-[0-9]{4}-[0-9]{2}-[0-9]{2}[.]pb$'),
  clearing_sha256  char(64) CHECK (clearing_sha256 ~ '^[0-9a-f]{64}$'),
  record_count     bigint CHECK (record_count >= 2),
  report_sha256    char(64) CHECK (report_sha256 ~ '^[0-9a-f]{64}$'),
  CONSTRAINT business_dates_closed_complete CHECK (
    (status = 'open' AND closed_at IS NULL AND clearing_file IS NULL
     AND clearing_sha256 IS NULL AND record_count IS NULL
     AND report_sha256 IS NULL) OR
    (status = 'closed' AND closed_at IS NOT NULL AND clearing_file IS NOT NULL
     AND clearing_sha256 IS NOT NULL AND record_count IS NOT NULL
     AND report_sha256 IS NOT NULL))
);
COMMENT ON TABLE switch.business_dates IS
  'settlement state of each business date; closed dates reject new events';

-- Totals of a settled date, per (level, key, currency): level merchant
-- (key merchant_id), terminal (key terminal_id) or issuer (key issuer_id,
-- '' when the journal names none).  Debits and credits are magnitudes in
-- minor units of the currency; credits include late-reversal adjustments.
-- Fees and the value date are on merchant rows only, with the fee plan
-- they were computed from (so a later change of the plan does not make
-- the stored totals look wrong).  net = debit - credit - fee, stored as a
-- magnitude and a sign: 'D' (a net debit to cardholders: the acquirer
-- owes the merchant the amount) or 'C' (the merchant owes it).
CREATE TABLE switch.settlement_totals (
  business_date    date NOT NULL REFERENCES switch.business_dates,
  level            text NOT NULL CHECK (level IN ('merchant', 'terminal', 'issuer')),
  key              text NOT NULL CHECK (key ~ '^[0-9A-Za-z_ -]{0,32}$'),
  currency         char(3) NOT NULL REFERENCES switch.currencies (numeric_code),
  debit_count      bigint NOT NULL CHECK (debit_count >= 0),
  debit_minor      bigint NOT NULL CHECK (debit_minor >= 0),
  credit_count     bigint NOT NULL CHECK (credit_count >= 0),
  credit_minor     bigint NOT NULL CHECK (credit_minor >= 0),
  fee_minor        bigint NOT NULL DEFAULT 0 CHECK (fee_minor >= 0),
  net_minor        bigint NOT NULL CHECK (net_minor >= 0),
  net_sign         char(1) NOT NULL CHECK (net_sign IN ('D', 'C')),
  value_date       date,
  fee_bps          integer CHECK (fee_bps BETWEEN 0 AND 10000),
  fee_fixed_minor  bigint CHECK (fee_fixed_minor >= 0),
  fee_currency     char(3) REFERENCES switch.currencies (numeric_code),
  settlement_days  smallint CHECK (settlement_days BETWEEN 0 AND 30),
  PRIMARY KEY (business_date, level, key, currency),
  CONSTRAINT settlement_totals_merchant_terms CHECK (
    (level = 'merchant') = (value_date IS NOT NULL) AND
    (level = 'merchant') = (fee_bps IS NOT NULL) AND
    (level = 'merchant') = (fee_fixed_minor IS NOT NULL) AND
    (level = 'merchant') = (fee_currency IS NOT NULL) AND
    (level = 'merchant') = (settlement_days IS NOT NULL) AND
    (level = 'merchant' OR fee_minor = 0))
);
COMMENT ON TABLE switch.settlement_totals IS
  'per merchant, terminal and issuer totals of a closed business date';

GRANT SELECT ON switch.business_dates, switch.settlement_totals TO switch_reader;

-- Closes the journal partition of date d: makes it if missing (so a date
-- without events can be closed too) and adds journal_closed CHECK (false)
-- NOT VALID unless present.  Returns true when it added the constraint.
-- The ALTER TABLE takes an ACCESS EXCLUSIVE lock on the partition: it
-- waits for writers with uncommitted events in it, and until the caller's
-- transaction ends, new writers wait, then fail on the constraint.  Does
-- not touch business_dates: the settle transaction does, with the totals.
CREATE FUNCTION switch.close_journal_partition(d date) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, switch AS $$
DECLARE
  part text := 'journal_event_' || to_char(d, 'YYYYMMDD');
BEGIN
  IF d IS NULL THEN
    RAISE EXCEPTION 'close_journal_partition: date is null';
  END IF;
  -- Only when missing: ensure_journal_partition's advisory lock would
  -- otherwise be held by the settle transaction until its COMMIT.
  IF to_regclass(format('switch.%I', part)) IS NULL THEN
    PERFORM switch.ensure_journal_partition(d);
  END IF;
  IF EXISTS (SELECT 1 FROM pg_constraint
              WHERE conrelid = format('switch.%I', part)::regclass
                AND conname = 'journal_closed') THEN
    RETURN false;
  END IF;
  EXECUTE format('ALTER TABLE switch.%I ADD CONSTRAINT journal_closed '
                 'CHECK (false) NOT VALID', part);
  RETURN true;
END
$$;
REVOKE ALL ON FUNCTION switch.close_journal_partition(date) FROM PUBLIC;

-- The first date after d that is not closed: where a late reversal of an
-- original dated d goes (as an adjustment, orig_business_date = d).
CREATE FUNCTION switch.next_open_business_date(d date) RETURNS date
LANGUAGE sql STABLE SET search_path = pg_catalog, switch AS $$
  SELECT min(g)::date
    FROM generate_series(d + 1, d + 400, interval '1 day') AS g
   WHERE NOT EXISTS (SELECT 1 FROM switch.business_dates b
                      WHERE b.business_date = g::date AND b.status = 'closed')
$$;
