-- 0006_lookup.sql — what the transaction lookup and the terminal batch
-- totals (db/lookup.c, db/recon.c; docs/lookup-and-recon.md) need: a way
-- to find the events of a transaction that were written into a later
-- business date as adjustments (a late reversal of an original whose date
-- was closed: orig_business_date set).
--
-- Without it, reading one transaction's adjustments scans every partition
-- after its date.  The index is partial on orig_business_date IS NOT NULL:
-- only adjustment rows (rare) have an entry, so an ordinary event pays one
-- predicate test on insert and no index write; the ~15% insert cost of a
-- full journal index does not apply.  Queries must say
-- orig_business_date IS NOT NULL (or compare it with =) to use it.
-- Names are schema-qualified; no BEGIN/COMMIT here.

CREATE INDEX journal_event_adjustment
  ON switch.journal_event (orig_business_date, node_id, txn_id)
  WHERE orig_business_date IS NOT NULL;
