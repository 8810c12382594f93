-- keyworker 005: the signup outbox of listen mode, and which capture path
-- the running workers use.
-- Placeholders: {{schema}}. Depends on 001 only.
--
-- Listen mode's trigger on the users table (created by the worker, with a
-- SECURITY DEFINER function it owns) inserts each new user's id here, in the
-- signup's own transaction, and notifies only when no other transaction in
-- flight is notifying already. The listener deletes rows in the same
-- transaction that enqueues their jobs, so a row is either here or in a job,
-- whatever fails and whenever the worker is down; the notification is only
-- a wake-up. No index: the signup pays for one heap insert, and the
-- listener takes rows by ctid.

CREATE TABLE IF NOT EXISTS {{schema}}.signup_outbox (
	user_id uuid NOT NULL,
	queued_at timestamptz NOT NULL DEFAULT now()
) WITH (
	-- A queue: rows live for milliseconds. Vacuum after every thousand
	-- dead rows, whatever the table's size, so scans stay short.
	autovacuum_vacuum_scale_factor = 0,
	autovacuum_vacuum_threshold = 1000,
	autovacuum_vacuum_insert_scale_factor = 0,
	autovacuum_vacuum_insert_threshold = 1000
);
ALTER TABLE {{schema}}.signup_outbox ENABLE ROW LEVEL SECURITY;

-- What the last worker to start chose to read signups with, and why
-- (KEYWORKER_MODE=auto chooses): `worker status` shows it.
ALTER TABLE {{schema}}.installation
	ADD COLUMN IF NOT EXISTS capture_mode text,
	ADD COLUMN IF NOT EXISTS capture_reason text,
	ADD COLUMN IF NOT EXISTS capture_chosen_at timestamptz;
