-- 0003_journal_chain.sql — what the journal writer (db/journal.c) needs:
-- the HMAC chain, the transaction kind, adjustments into a later date, and
-- one function that appends a batch of one chain in one statement.
--
-- The chain (docs/journal.md): events written by one node for one business
-- date are numbered 1, 2, 3, ... (chain_seq) and each carries
--   chain_hmac = HMAC-SHA-256(K, chain_hmac of seq - 1 | canonical(event))
-- (32 zero bytes before seq 1) under version chain_key_ver of the HMAC key
-- the HSM adapter holds.  journal_chain_head keeps the last link of each
-- chain, written in the same transaction as the rows, so a row cut off the
-- end is as visible as one changed, deleted or inserted in the middle.
-- The journal is empty when this applies (nothing wrote events before the
-- writer), so the NOT NULL columns need no default.

ALTER TABLE switch.journal_event
  ADD COLUMN chain_seq bigint NOT NULL CHECK (chain_seq > 0),
  ADD COLUMN chain_hmac bytea NOT NULL CHECK (octet_length(chain_hmac) = 32),
  ADD COLUMN chain_key_ver integer NOT NULL CHECK (chain_key_ver > 0),
  -- What the original is, fixed on its received event from MTI and
  -- processing code (NULL on the other events): what settles depends on it.
  ADD COLUMN txn_kind text CHECK (txn_kind IN (
    'purchase', 'cash', 'refund', 'completion', 'preauth', 'inquiry',
    'other')),
  -- An event written into a later business date because the original's
  -- date was closed (a late reversal): the original's date.  NULL when the
  -- event belongs to its original's date.
  ADD COLUMN orig_business_date date,
  ADD CONSTRAINT journal_event_adjustment_earlier CHECK (
    orig_business_date IS NULL OR orig_business_date < business_date);

COMMENT ON COLUMN switch.journal_event.amount_minor IS
  'received: requested amount; response/stand_in: approved amount (a '
  'partial approval is less); reversal_requested: the amount reversed (the '
  'whole approved amount, or the difference to DE95''s replacement amount)';

CREATE TABLE switch.journal_chain_head (
  business_date  date NOT NULL,
  node_id        integer NOT NULL CHECK (node_id BETWEEN 0 AND 65535),
  chain_seq      bigint NOT NULL CHECK (chain_seq > 0),
  chain_hmac     bytea NOT NULL CHECK (octet_length(chain_hmac) = 32),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (business_date, node_id)
);
COMMENT ON TABLE switch.journal_chain_head IS
  'last link of each (business date, node) HMAC chain of the journal';
GRANT SELECT ON switch.journal_chain_head TO switch_reader;

-- Appends events seq p_prev_seq + 1 .. p_prev_seq + n of the chain
-- (p_date, p_node) in one statement (so in one transaction with the head).
-- Arrays are parallel, one element per event; timestamps are microseconds
-- since the Unix epoch (terminal_local_at as a local time, so without a
-- zone).  Raises:
--   SW001  some event is already in the journal (a retry after a lost
--          COMMIT, or a resubmission): nothing of this call is kept; the
--          writer looks up which and sends the rest with a new chain
--   SW002  the chain head is not at p_prev_seq (a second writer with the
--          same node id, or a stale head after a reconnect)
--   SW003  the arrays do not line up, or chain_seq is not contiguous
-- and whatever a CHECK, a missing partition or a closed date raises.
CREATE FUNCTION switch.journal_append(
  p_date date, p_node integer, p_prev_seq bigint, p_key_ver integer,
  p_txn_id bigint[], p_event_no integer[], p_event text[], p_state text[],
  p_mti text[], p_pcode text[], p_amount bigint[], p_sign text[],
  p_currency text[], p_stan text[], p_tstan text[], p_tlocal_us bigint[],
  p_transmit_us bigint[], p_rrn text[], p_auth text[], p_rc text[],
  p_reason text[], p_tid text[], p_mid text[], p_batch integer[],
  p_issuer text[], p_link text[], p_kind text[], p_orig_date date[],
  p_pan_masked text[], p_pan_hash bytea[], p_pan_hash_ver integer[],
  p_pan_enc bytea[], p_pan_enc_ver integer[], p_chain_seq bigint[],
  p_chain_hmac bytea[]) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, switch AS $$
DECLARE
  n integer := coalesce(cardinality(p_txn_id), 0);
  ins integer;
BEGIN
  IF n = 0 OR p_prev_seq IS NULL OR p_prev_seq < 0
     OR cardinality(p_chain_seq) <> n OR cardinality(p_chain_hmac) <> n
     OR cardinality(p_event_no) <> n OR cardinality(p_event) <> n
     OR cardinality(p_state) <> n OR cardinality(p_mti) <> n
     OR p_chain_seq[1] <> p_prev_seq + 1 OR p_chain_seq[n] <> p_prev_seq + n
  THEN
    RAISE EXCEPTION 'journal_append: % events do not line up', n
      USING ERRCODE = 'SW003';
  END IF;
  INSERT INTO switch.journal_event (
    business_date, node_id, txn_id, event_no, event, state, mti,
    processing_code, amount_minor, sign, currency, stan, terminal_stan,
    terminal_local_at, transmission_at, rrn, auth_code, response_code,
    reason, terminal_id, merchant_id, batch_no, issuer_id, link_id,
    txn_kind, orig_business_date, pan_masked, pan_hash, pan_hash_key_ver,
    pan_enc, pan_enc_key_ver, chain_seq, chain_hmac, chain_key_ver)
  SELECT p_date, p_node, u.txn_id, u.event_no, u.event, u.state, u.mti,
         u.pcode, u.amount, u.sign, u.currency, u.stan, u.tstan,
         timestamp 'epoch' + u.tlocal * interval '1 microsecond',
         timestamptz 'epoch' + u.transmit * interval '1 microsecond',
         u.rrn, u.auth, u.rc, u.reason, u.tid, u.mid, u.batch, u.issuer,
         u.link, u.kind, u.orig_date, u.pan_masked, u.pan_hash,
         u.pan_hash_ver, u.pan_enc, u.pan_enc_ver, u.chain_seq, u.chain_hmac,
         p_key_ver
    FROM unnest(p_txn_id, p_event_no, p_event, p_state, p_mti, p_pcode,
                p_amount, p_sign, p_currency, p_stan, p_tstan, p_tlocal_us,
                p_transmit_us, p_rrn, p_auth, p_rc, p_reason, p_tid, p_mid,
                p_batch, p_issuer, p_link, p_kind, p_orig_date, p_pan_masked,
                p_pan_hash, p_pan_hash_ver, p_pan_enc, p_pan_enc_ver,
                p_chain_seq, p_chain_hmac)
      AS u(txn_id, event_no, event, state, mti, pcode, amount, sign,
           currency, stan, tstan, tlocal, transmit, rrn, auth, rc, reason,
           tid, mid, batch, issuer, link, kind, orig_date, pan_masked,
           pan_hash, pan_hash_ver, pan_enc, pan_enc_ver, chain_seq,
           chain_hmac)
  ON CONFLICT ON CONSTRAINT journal_event_idempotency DO NOTHING;
  GET DIAGNOSTICS ins = ROW_COUNT;
  IF ins <> n THEN
    RAISE EXCEPTION 'journal_append: % of % events already journaled',
      n - ins, n USING ERRCODE = 'SW001';
  END IF;
  IF p_prev_seq = 0 THEN
    INSERT INTO switch.journal_chain_head
      (business_date, node_id, chain_seq, chain_hmac)
      VALUES (p_date, p_node, p_chain_seq[n], p_chain_hmac[n])
      ON CONFLICT DO NOTHING;
  ELSE
    UPDATE switch.journal_chain_head
       SET chain_seq = p_chain_seq[n], chain_hmac = p_chain_hmac[n],
           updated_at = now()
     WHERE business_date = p_date AND node_id = p_node
       AND chain_seq = p_prev_seq;
  END IF;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'journal_append: chain (%, node %) is not at %',
      p_date, p_node, p_prev_seq USING ERRCODE = 'SW002';
  END IF;
  RETURN ins;
END
$$;
REVOKE ALL ON FUNCTION switch.journal_append FROM PUBLIC;
