-- Crossfold, fifth migration: durable deadlines ("cancel the order if it is not paid within 15
-- minutes").
--
-- A deadline is scheduled once (its id is derived from the event that caused it, so scheduling
-- again changes nothing), claimed by one worker at a time when due (a lease: `claimed_until`,
-- and a fencing token: `claim_token`, incremented by every claim), and completed only by the
-- latest claim. Times always come from the caller's clock, never from now(), so every node
-- decides "due" by the same rule and tests can drive time.
--
-- Like 0002, the application role writes only through the SECURITY DEFINER functions below
-- (PgEventStore::grant_access grants them); it reads the table like every other.

CREATE TABLE deadlines (
    deadline_id     text        PRIMARY KEY CHECK (length(deadline_id) BETWEEN 1 AND 200),
    kind            text        NOT NULL,
    due_at          timestamptz NOT NULL,
    payload         jsonb       NOT NULL DEFAULT 'null',
    correlation_id  uuid,
    causation_id    uuid,
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'fired', 'refused', 'cancelled')),
    claim_token     bigint      NOT NULL DEFAULT 0,
    claimed_until   timestamptz,
    finished_at     timestamptz,
    note            text,
    scheduled_at    timestamptz NOT NULL DEFAULT now()
);

-- What a poll looks for: pending deadlines by due time.
CREATE INDEX deadlines_pending_due_idx ON deadlines (due_at, deadline_id)
    WHERE status = 'pending';

DO $migration$
BEGIN
-- Inserts a deadline unless one with its id exists. Returns whether it inserted.
EXECUTE format($function$
CREATE FUNCTION %1$I.schedule_deadline(p_id text, p_kind text, p_due timestamptz,
                                       p_payload jsonb, p_correlation uuid, p_causation uuid)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO %1$I.deadlines (deadline_id, kind, due_at, payload, correlation_id, causation_id)
    VALUES (p_id, p_kind, p_due, coalesce(p_payload, 'null'::jsonb), p_correlation, p_causation)
    ON CONFLICT (deadline_id) DO NOTHING;
    RETURN FOUND;
END
$$
$function$, current_schema());

-- Cancels a pending deadline. Returns whether it was pending.
EXECUTE format($function$
CREATE FUNCTION %1$I.cancel_deadline(p_id text, p_at timestamptz) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE %1$I.deadlines SET status = 'cancelled', finished_at = p_at, claimed_until = NULL
        WHERE deadline_id = p_id AND status = 'pending';
    RETURN FOUND;
END
$$
$function$, current_schema());

-- Claims up to p_limit pending deadlines due at p_now that no live claim holds, until p_until.
-- SKIP LOCKED: two workers polling at once take different deadlines instead of waiting for
-- each other, and the row lock plus the re-checked condition keep one deadline in one claim.
EXECUTE format($function$
CREATE FUNCTION %1$I.claim_deadlines(p_now timestamptz, p_limit integer, p_until timestamptz)
RETURNS TABLE (deadline_id text, kind text, due_at timestamptz, payload jsonb,
               correlation_id uuid, causation_id uuid, claim_token bigint)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    WITH due AS (
        SELECT d.deadline_id FROM %1$I.deadlines d
        WHERE d.status = 'pending' AND d.due_at <= p_now
          AND (d.claimed_until IS NULL OR d.claimed_until <= p_now)
        ORDER BY d.due_at, d.deadline_id
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE %1$I.deadlines d
    SET claim_token = d.claim_token + 1, claimed_until = p_until
    FROM due WHERE d.deadline_id = due.deadline_id
    RETURNING d.deadline_id, d.kind, d.due_at, d.payload, d.correlation_id, d.causation_id,
              d.claim_token
$$
$function$, current_schema());

-- Records how a claimed deadline ended, if p_token is still its latest claim and it is still
-- pending. Returns whether it did.
EXECUTE format($function$
CREATE FUNCTION %1$I.complete_deadline(p_id text, p_token bigint, p_status text, p_note text,
                                       p_at timestamptz)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_status NOT IN ('fired', 'refused') THEN
        RAISE EXCEPTION 'a claimed deadline ends fired or refused, not %%', p_status
            USING ERRCODE = 'check_violation';
    END IF;
    UPDATE %1$I.deadlines
    SET status = p_status, note = p_note, finished_at = p_at, claimed_until = NULL
    WHERE deadline_id = p_id AND claim_token = p_token AND status = 'pending';
    RETURN FOUND;
END
$$
$function$, current_schema());
END
$migration$;

REVOKE ALL ON FUNCTION schedule_deadline, cancel_deadline, claim_deadlines, complete_deadline
    FROM PUBLIC;
