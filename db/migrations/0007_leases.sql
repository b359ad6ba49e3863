-- 0007_leases.sql — handing out number ranges from switch.leases (made in
-- 0002): STANs per (node, link), RRN sequences per (node, business date),
-- txn_id counters per node (docs/transaction-model.md, "STAN and RRN").
--
-- switch.lease_range(kind, node, scope, n) returns the next n numbers of
-- the row (made on first use) in one statement under the row's lock, so
-- two nodes or threads never get overlapping ranges, and a range a node
-- abandoned (a restart) is skipped, never handed out again.  STANs wrap
-- after 999,999 back to 1, but not twice within 24 hours: the numbers a
-- wrap reuses were first handed out after the previous wrap, so a second
-- wrap within 24 hours could reuse a STAN a link saw less than a day ago.
-- RRN sequences and txn_id counters never wrap.  Raises:
--   SW020  the range cannot be given (exhausted, or a STAN wrap within
--          24 hours of the last one)
--   SW021  bad arguments
CREATE FUNCTION switch.lease_range(p_kind text, p_node integer, p_scope text,
                                   p_n integer)
RETURNS TABLE (low bigint, high bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, switch AS $$
DECLARE
  l switch.leases%ROWTYPE;
  maxv bigint;
BEGIN
  IF p_kind IS NULL OR p_kind NOT IN ('stan', 'rrn', 'txn_id')
     OR p_node IS NULL OR p_scope IS NULL OR p_n IS NULL
     OR p_n < 1 OR p_n > 100000 THEN
    RAISE EXCEPTION 'lease_range: bad arguments (kind %, node %, n %)',
      p_kind, p_node, p_n USING ERRCODE = 'SW021';
  END IF;
  maxv := CASE p_kind WHEN 'txn_id' THEN 281474976710655 ELSE 999999 END;
  INSERT INTO switch.leases (kind, node_id, scope, max_value)
    VALUES (p_kind, p_node, p_scope, maxv)
    ON CONFLICT (kind, node_id, scope) DO NOTHING;
  SELECT * INTO l FROM switch.leases
   WHERE kind = p_kind AND node_id = p_node AND scope = p_scope FOR UPDATE;
  IF l.next_value + p_n - 1 > l.max_value THEN
    IF p_kind <> 'stan' THEN
      RAISE EXCEPTION 'lease_range: % numbers of % for node % (%) are used up',
        p_kind, p_kind, p_node, p_scope USING ERRCODE = 'SW020';
    END IF;
    IF l.wrapped_at IS NOT NULL AND l.wrapped_at > now() - interval '24 hours'
    THEN
      RAISE EXCEPTION 'lease_range: the STANs of node % on link % wrapped at % '
        'and would wrap again within 24 hours', p_node, p_scope, l.wrapped_at
        USING ERRCODE = 'SW020',
              HINT = 'more than 999,999 requests a day on one link: use '
                     'more links or nodes';
    END IF;
    l.next_value := 1;
    l.wrapped_at := now();
  END IF;
  UPDATE switch.leases
     SET next_value = l.next_value + p_n,
         lease_low = l.next_value, lease_high = l.next_value + p_n - 1,
         leased_at = now(), wrapped_at = l.wrapped_at
   WHERE kind = p_kind AND node_id = p_node AND scope = p_scope;
  low := l.next_value;
  high := l.next_value + p_n - 1;
  RETURN NEXT;
END
$$;
REVOKE ALL ON FUNCTION switch.lease_range FROM PUBLIC;
