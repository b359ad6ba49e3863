-- 0008_journal_retention.sql — dropping whole old days of the journal
-- (docs/retention.md).  Rows are append-only, so retention removes whole
-- partitions: switch.drop_journal_partition(d) detaches and drops
-- switch.journal_event_YYYYMMDD, and the day's chain heads with it (verify
-- would otherwise report the day's rows as cut off), but only for a date
-- that is settled (closed) and owes nothing to an issuer.  The day's
-- settlement rows (business_dates, settlement_totals) stay: they are the
-- summary kept after the detail goes.  Raises SW030 when the date may not
-- be dropped, with the reason; returns false when there is no partition.
CREATE FUNCTION switch.drop_journal_partition(d date) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, switch AS $$
DECLARE
  part text := 'journal_event_' || to_char(d, 'YYYYMMDD');
BEGIN
  IF d IS NULL THEN
    RAISE EXCEPTION 'drop_journal_partition: date is null'
      USING ERRCODE = 'SW030';
  END IF;
  PERFORM pg_advisory_xact_lock(91634423908179); -- as ensure_journal_partition
  IF to_regclass(format('switch.%I', part)) IS NULL THEN
    RETURN false;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM switch.business_dates
                  WHERE business_date = d AND status = 'closed') THEN
    RAISE EXCEPTION 'drop_journal_partition: % is not settled', d
      USING ERRCODE = 'SW030', HINT = 'run switchctl settle --date first';
  END IF;
  IF EXISTS (SELECT 1 FROM switch.saf
              WHERE business_date = d AND state IN ('armed', 'live', 'dead'))
  THEN
    RAISE EXCEPTION 'drop_journal_partition: % still owes a reversal or '
      'advice to an issuer', d USING ERRCODE = 'SW030';
  END IF;
  EXECUTE format('ALTER TABLE switch.journal_event DETACH PARTITION switch.%I',
                 part);
  EXECUTE format('DROP TABLE switch.%I', part);
  DELETE FROM switch.journal_chain_head WHERE business_date = d;
  DELETE FROM switch.saf WHERE business_date = d;  -- acked or disarmed only
  RETURN true;
END
$$;
REVOKE ALL ON FUNCTION switch.drop_journal_partition(date) FROM PUBLIC;

-- The journal's partitions with their dates, for retention.
CREATE VIEW switch.journal_partitions AS
  SELECT to_date(substr(c.relname, 15), 'YYYYMMDD') AS business_date,
         c.relname AS partition
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
   WHERE i.inhparent = 'switch.journal_event'::regclass
     AND c.relname ~ '^journal_event_[0-9]{8}$';
GRANT SELECT ON switch.journal_partitions TO switch_reader;
