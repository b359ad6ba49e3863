-- 0004_saf.sql — store-and-forward (docs/saf.md): the states and columns
-- the SAF worker needs on switch.saf, one row per send (the matching key
-- acknowledgements are matched by), and switch.saf_apply, the function the
-- journal writer calls in the transaction of the events that cause SAF
-- changes.
--
-- Life cycle of a row (docs/saf.md has the whole table):
--   armed     a reversal armed before the request left; leased to the node
--             that armed it.  The outcome disarms it (-> disarmed) or a
--             timeout releases it (-> live); a lease that expires makes it
--             live at the next claim (the node died in between).
--   live      owed: claimed by one node at a time with a lease, sent,
--             repeated with backoff.
--   acked     the issuer acknowledged it.  Terminal.
--   dead      the attempt limit was reached; an operator may retry it
--             (-> live).
--   disarmed  armed, then not owed (the issuer's answer was committed).
--             Kept, not deleted, so that an 'arm' applied again cannot
--             bring a reversal back.  A later 'reverse' or 'release'
--             (something is owed after all) makes it live.
-- Names are schema-qualified; no BEGIN/COMMIT here.

ALTER TABLE switch.saf DROP CONSTRAINT saf_state_check;
ALTER TABLE switch.saf
  ADD CONSTRAINT saf_state_check
    CHECK (state IN ('armed', 'live', 'acked', 'dead', 'disarmed')),
  -- The attempt count when an operator last retried the row: the attempt
  -- limit and the backoff count the sends since then.  attempts itself
  -- only grows (the history is kept, and repeats stay repeats).
  ADD COLUMN retried_attempts integer NOT NULL DEFAULT 0
    CHECK (retried_attempts >= 0),
  ADD COLUMN retries integer NOT NULL DEFAULT 0 CHECK (retries >= 0),
  ADD COLUMN dead_at timestamptz,
  ADD COLUMN acked_at timestamptz,
  ADD CONSTRAINT saf_retried_not_above_attempts
    CHECK (retried_attempts <= attempts),
  -- Only an armed reversal or a live row being worked on holds a lease.
  ADD CONSTRAINT saf_lease_only_when_active
    CHECK (owner IS NULL OR state IN ('armed', 'live')),
  ADD CONSTRAINT saf_mti_by_kind CHECK (
    (kind = 'reversal' AND mti IN ('0400', '0420')) OR
    (kind = 'advice' AND mti IN ('0120', '0220')));

-- Operators list dead rows (switchctl saf list --state dead).
CREATE INDEX saf_dead ON switch.saf (dead_at) WHERE state = 'dead';

-- One row per message sent for a SAF row.  The matching key of a send is
-- (link_id, stan, transmission_at): the STAN in DE11 and the DE7 of that
-- message on that link.  An acknowledgement matches the row through any
-- of its sends, so a 0430 answering the first 0420 after a 0421 has gone
-- still counts.  A STAN is not reused on a link within 24 hours and DE7
-- moves on, so a key belongs to one SAF row; the index is not unique
-- because a dialect may repeat with the same DE11 and DE7 (the repeat then
-- shares its first send's key).  db_saf_record_send refuses a key another
-- row already used.
CREATE TABLE switch.saf_attempt (
  saf_id           bigint NOT NULL REFERENCES switch.saf ON DELETE CASCADE,
  attempt          integer NOT NULL CHECK (attempt > 0),
  mti              char(4) NOT NULL
                   CHECK (mti IN ('0400', '0401', '0420', '0421', '0120',
                                  '0121', '0220', '0221')),
  owner            text NOT NULL CHECK (owner ~ '^[A-Za-z0-9_.:-]{1,64}$'),
  link_id          text NOT NULL CHECK (link_id ~ '^[a-z0-9_-]{1,32}$'),
  stan             char(6) NOT NULL CHECK (stan ~ '^[0-9]{6}$'),
  transmission_at  timestamptz NOT NULL,
  sent_at          timestamptz NOT NULL DEFAULT now(),
  -- NULL until known: acked (an answer matched), refused (an answer that
  -- the worker did not take as an acknowledgement), no_answer (timed out).
  outcome          text CHECK (outcome IN ('acked', 'refused', 'no_answer')),
  response_code    char(2) CHECK (response_code ~ '^[0-9A-Z]{2}$'),
  answered_at      timestamptz,
  PRIMARY KEY (saf_id, attempt)
);
CREATE INDEX saf_attempt_matching_key
  ON switch.saf_attempt (link_id, stan, transmission_at);
COMMENT ON TABLE switch.saf_attempt IS
  'one row per SAF message sent, with its issuer matching key';
REVOKE ALL ON switch.saf_attempt FROM PUBLIC;
GRANT SELECT ON switch.saf_attempt TO switch_reader;

-- Raises SW010 with message m (a bad argument of saf_apply).
CREATE FUNCTION switch.saf_refuse(m text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'saf_apply: %', m USING ERRCODE = 'SW010',
    HINT = 'see docs/saf.md, "The saf_apply contract"';
END
$$;
REVOKE ALL ON FUNCTION switch.saf_refuse(text) FROM PUBLIC;

-- Checks the arguments of saf_apply as a whole (SW010 when wrong).
CREATE FUNCTION switch.saf_check_batch(
  p_node integer, p_owner text, p_lease_ms integer, p_date date[],
  p_txn bigint[], p_op text[], p_mti text[], p_link text[]) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, switch AS $$
DECLARE
  n integer := coalesce(cardinality(p_op), 0);
BEGIN
  IF p_node IS NULL OR p_node NOT BETWEEN 0 AND 65535 THEN
    PERFORM switch.saf_refuse(format('node %s is not in 0..65535', p_node));
  END IF;
  IF n = 0 THEN
    PERFORM switch.saf_refuse('no operations');
  END IF;
  IF coalesce(cardinality(p_date), 0) <> n
     OR coalesce(cardinality(p_txn), 0) <> n
     OR coalesce(cardinality(p_mti), 0) <> n
     OR coalesce(cardinality(p_link), 0) <> n THEN
    PERFORM switch.saf_refuse(format(
      'arrays do not line up: %s ops, %s dates, %s txn ids, %s MTIs, %s links',
      n, coalesce(cardinality(p_date), 0), coalesce(cardinality(p_txn), 0),
      coalesce(cardinality(p_mti), 0), coalesce(cardinality(p_link), 0)));
  END IF;
  IF 'arm' = ANY (p_op) THEN
    IF p_owner IS NULL OR p_owner !~ '^[A-Za-z0-9_.:-]{1,64}$' THEN
      PERFORM switch.saf_refuse(
        'owner must be 1 to 64 characters of A-Z a-z 0-9 _ . : -');
    END IF;
    -- A day at most: a longer lease would hide a dead node's reversals.
    IF p_lease_ms IS NULL OR p_lease_ms NOT BETWEEN 1 AND 86400000 THEN
      PERFORM switch.saf_refuse(format(
        'lease of %s ms is not in 1..86400000', p_lease_ms));
    END IF;
  END IF;
  RETURN n;
END
$$;
REVOKE ALL ON FUNCTION switch.saf_check_batch FROM PUBLIC;

-- Checks one operation (SW010 when wrong) and returns the MTI to store:
-- the given one, or 0420 for a reversal given none.
CREATE FUNCTION switch.saf_check_op(
  i integer, p_date date, p_txn bigint, p_op text, p_mti text, p_link text)
  RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, switch AS $$
BEGIN
  IF p_op IS NULL OR p_op NOT IN ('arm', 'disarm', 'release', 'reverse',
                                  'advice', 'ack') THEN
    PERFORM switch.saf_refuse(format(
      'operation %s is %L, not arm, disarm, release, reverse, advice or ack',
      i, p_op));
  END IF;
  IF p_date IS NULL OR p_txn IS NULL THEN
    PERFORM switch.saf_refuse(format(
      'operation %s (%s) has no business date or txn_id', i, p_op));
  END IF;
  IF p_link IS NOT NULL AND p_link !~ '^[a-z0-9_-]{1,32}$' THEN
    PERFORM switch.saf_refuse(format(
      'operation %s (%s): link %L is not 1 to 32 of a-z 0-9 _ -',
      i, p_op, p_link));
  END IF;
  IF p_op IN ('arm', 'release', 'reverse')
     AND coalesce(p_mti, '0420') NOT IN ('0400', '0420') THEN
    PERFORM switch.saf_refuse(format(
      'operation %s (%s): MTI %L is not a reversal (0400 or 0420)',
      i, p_op, p_mti));
  END IF;
  IF p_op = 'advice' AND (p_mti IS NULL OR p_mti NOT IN ('0120', '0220')) THEN
    PERFORM switch.saf_refuse(format(
      'operation %s (advice): MTI %L is not an advice (0120 or 0220)',
      i, p_mti));
  END IF;
  -- ack: the message acknowledged or the acknowledgement itself.
  IF p_op = 'ack' AND p_mti IS NOT NULL AND p_mti NOT IN (
       '0400', '0401', '0410', '0420', '0421', '0430', '0120', '0121',
       '0130', '0220', '0221', '0230') THEN
    PERFORM switch.saf_refuse(format(
      'operation %s (ack): MTI %L is not a reversal or an advice', i, p_mti));
  END IF;
  IF p_op = 'advice' THEN
    RETURN p_mti;
  END IF;
  RETURN coalesce(p_mti, '0420');
END
$$;
REVOKE ALL ON FUNCTION switch.saf_check_op FROM PUBLIC;

-- The SAF changes of one journal batch, in the caller's transaction (the
-- one that runs switch.journal_append).  Parallel arrays, one element per
-- operation, applied in array order:
--   p_date, p_txn  the original's business date and txn_id (node p_node)
--   p_op           arm | disarm | release | reverse | advice | ack
--   p_mti          reversal 0420 (or 0400; NULL means 0420), advice 0120
--                  or 0220; for ack it chooses the kind (an advice or
--                  advice response MTI, 01xx/02xx: the advice; NULL or a
--                  reversal or reversal response MTI, 04xx: the reversal)
--   p_link         the link the message goes to (NULL: none yet)
-- p_owner and p_lease_ms are the lease of the rows armed.  Every operation
-- is safe to apply twice.  Returns how many rows were inserted or changed.
-- Raises SW010 for a bad argument (nothing applied) and SW011 when a
-- txn_id is already queued for another business date or node.
CREATE FUNCTION switch.saf_apply(
  p_node integer, p_owner text, p_lease_ms integer, p_date date[],
  p_txn bigint[], p_op text[], p_mti text[], p_link text[]) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, switch AS $$
DECLARE
  n integer;
  changed integer := 0;
  k integer;
  v_mti text;
  v_kind text;
BEGIN
  n := switch.saf_check_batch(p_node, p_owner, p_lease_ms, p_date, p_txn,
                              p_op, p_mti, p_link);
  FOR i IN 1 .. n LOOP
    v_mti := switch.saf_check_op(i, p_date[i], p_txn[i], p_op[i], p_mti[i],
                               p_link[i]);
    PERFORM 1 FROM switch.saf s
      WHERE s.txn_id = p_txn[i]
        AND (s.business_date <> p_date[i] OR s.node_id <> p_node);
    IF FOUND THEN
      RAISE EXCEPTION 'saf_apply: txn_id % is already queued for another '
        'business date or node than (%, node %)', p_txn[i], p_date[i], p_node
        USING ERRCODE = 'SW011';
    END IF;
    CASE p_op[i]
    WHEN 'arm' THEN
      INSERT INTO switch.saf (business_date, node_id, txn_id, kind, mti,
                              link_id, state, owner, lease_until)
        VALUES (p_date[i], p_node, p_txn[i], 'reversal', v_mti, p_link[i],
                'armed', p_owner,
                now() + p_lease_ms * interval '1 millisecond')
        ON CONFLICT ON CONSTRAINT saf_one_per_original DO NOTHING;
    WHEN 'disarm' THEN
      UPDATE switch.saf
         SET state = 'disarmed', owner = NULL, lease_until = NULL,
             updated_at = now()
       WHERE txn_id = p_txn[i] AND kind = 'reversal' AND state = 'armed';
    WHEN 'release', 'reverse' THEN
      -- Owed now.  An armed or disarmed reversal becomes live; a live,
      -- acked or dead one stays as it is (a terminal 0400 and a timeout
      -- 0420 are one reversal).
      INSERT INTO switch.saf (business_date, node_id, txn_id, kind, mti,
                              link_id, state)
        VALUES (p_date[i], p_node, p_txn[i], 'reversal', v_mti, p_link[i],
                'live')
        ON CONFLICT ON CONSTRAINT saf_one_per_original DO UPDATE
          SET state = 'live', owner = NULL, lease_until = NULL,
              next_attempt_at = now(), updated_at = now(),
              link_id = coalesce(EXCLUDED.link_id, saf.link_id)
          WHERE saf.state IN ('armed', 'disarmed');
    WHEN 'advice' THEN
      INSERT INTO switch.saf (business_date, node_id, txn_id, kind, mti,
                              link_id, state)
        VALUES (p_date[i], p_node, p_txn[i], 'advice', v_mti, p_link[i], 'live')
        ON CONFLICT ON CONSTRAINT saf_one_per_original DO NOTHING;
    WHEN 'ack' THEN
      v_kind := CASE WHEN p_mti[i] LIKE '01__' OR p_mti[i] LIKE '02__'
                   THEN 'advice' ELSE 'reversal' END;
      UPDATE switch.saf
         SET state = 'acked', owner = NULL, lease_until = NULL,
             acked_at = now(), updated_at = now()
       WHERE txn_id = p_txn[i] AND kind = v_kind AND state <> 'acked';
    END CASE;
    GET DIAGNOSTICS k = ROW_COUNT;
    changed := changed + k;
  END LOOP;
  RETURN changed;
END
$$;
REVOKE ALL ON FUNCTION switch.saf_apply FROM PUBLIC;
