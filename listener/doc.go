// Package listener turns new rows of the users table into work for an
// Enqueuer, without running anything inside the signup transaction.
//
// # Sources
//
// Logical reads a permanent logical replication slot with the
// pgoutput plugin. Its publication covers only the users table, only
// inserts (publish = 'insert'), and only the columns keyworker needs (id,
// created_at, is_anonymous): emails and password hashes never enter the
// stream, and keyworker's own job inserts never feed back into it (never
// FOR ALL TABLES). Adding a table to a publication takes the table's owner;
// when this role is not the owner, Start fails with ErrNotPublishable and
// the exact CREATE PUBLICATION statement the owner must run, and uses the
// publication as it is once it exists. A publication that publishes more
// than that (updates, all columns, other tables, a row filter) is refused
// with ErrPublicationMismatch, never altered.
//
// Listen needs only what a role that may create a trigger on the users
// table has (hosted Supabase's postgres role): no publication, no slot, no
// REPLICATION. A statement-level AFTER INSERT trigger calls keyworker's
// SECURITY DEFINER function, which inserts the new permanent users' ids
// into keyworker's outbox table (OutboxTable) in the signup's transaction
// and, unless another transaction in flight holds the wake-up advisory lock
// (pg_try_advisory_xact_lock), notifies the listener. Skipping NOTIFY is
// the point: PostgreSQL holds its notify lock (one for the whole server)
// from just before a notifying transaction's commit to its end, so
// transactions that all notify commit one at a time. The function runs in
// an exception block, so its errors cannot fail a signup; NOTIFY's own
// errors at commit (a full notification queue, PREPARE TRANSACTION after
// NOTIFY) cannot be caught, and only the transaction holding the wake-up
// lock can meet them. The trigger is per statement, so a bulk insert of
// 10,000 users opens one subtransaction and one insert.
//
// The listener deletes rows from the outbox (FOR UPDATE SKIP LOCKED, so
// replicas share it) in the same transaction that enqueues their jobs: a
// signup is in the outbox or in a job, whatever crashes and however long
// the worker is down. Notifications are only wake-ups; the listener also
// looks again shortly after every drain that found signups (for those
// whose transaction skipped notifying and committed after that drain) and
// every PollInterval. On start it enqueues a Reconcile for signups the
// outbox never saw (made before the trigger existed, or while it was
// disabled or failing).
//
// Logical mode, on start, turns listen mode's trigger function into a
// no-op (only the table's owner may drop the trigger) and hands off what
// the outbox holds; listen mode drops logical mode's slot when nobody
// streams from it, since an abandoned slot keeps WAL forever.
//
// # Reconcile and catch-up
//
// A reconcile finds the eligible users without a signup key and hands them
// to the key path. It is a job (Enqueuer.EnqueueReconcileTx; `worker
// replay` runs the same from the command line): a source never scans the
// users table itself, it only asks for a reconcile, in a transaction of
// its own. Logical mode asks when its slot is new or was recreated (see
// Faults); listen mode on every start and whenever Listen.Reconcile is
// called.
//
// Catch-up is something else: a source working through its backlog after
// downtime, the WAL its slot kept (logical mode) or the rows waiting in the
// outbox (listen mode), through the same hand-off as live signups.
//
// # The hand-off (logical mode)
//
// One goroutine owns the replication connection: it receives, decodes
// (with a relation cache that belongs to the connection and dies with it),
// and sends every status message. Another owns the database writes. They
// share a queue of complete replication transactions and the "committed"
// position, so a slow database write never delays a status message (one
// goes out at least every StatusInterval, at most 10 s, and at once when
// the server asks for a reply).
//
// The writer takes whole replication transactions (never a part of one)
// until BatchMaxRows signups are queued or the oldest has waited
// BatchMaxWait, and commits them in ONE database transaction that:
//
//  1. locks the checkpoint row (replication_checkpoints, keyed by slot),
//  2. drops any transaction whose commit end LSN is at or below it,
//  3. calls Enqueuer.EnqueueSignupsTx with the rest, and
//  4. moves the checkpoint to the last transaction's commit end LSN.
//
// Only after that COMMIT returns does the position become confirmable; the
// receiving goroutine then sends it with write, flush and apply all set to
// it (pglogrepl would otherwise copy write into a zero flush).
//
// # Why every signup is enqueued exactly once
//
//  1. The server keeps every change after the slot's confirmed position
//     (confirmed_flush_lsn) until the client confirms past it. We confirm a
//     position only when everything at or below it is committed as jobs
//     (step 4 committed), or carried nothing for us (below).
//  2. Jobs and checkpoint commit atomically: after any crash, the jobs of a
//     replication transaction exist if and only if the checkpoint is at or
//     past its commit end LSN.
//  3. Replication starts at our checkpoint (0/0 the first time), never at
//     IDENTIFY_SYSTEM's position. The server starts at the later of it and
//     the slot's confirmed position, and sends every transaction that
//     commits after that. So nothing after the checkpoint is skipped: not
//     lost.
//  4. A crash between our COMMIT and the acknowledgement leaves the
//     checkpoint ahead of the slot. Starting at the checkpoint, the server
//     does not send those transactions again; if it does (it may start
//     earlier: after a server crash its slot state can be older), the
//     receiver skips every transaction whose end LSN is at or below the
//     checkpoint, and step 2 of the hand-off drops any that slip through
//     (for example from another replica's hand-off still in flight when
//     this one took over). So nothing is enqueued twice.
//  5. Idle advance: when no replication transaction is open or queued or
//     in flight, a keepalive's ServerWALEnd is confirmed. The keepalive
//     follows, in the stream, everything the server decoded below that
//     position, so nothing below it concerns us; confirming it without
//     persisting it is safe, since a restart starts at our older
//     checkpoint and the server forwards to the confirmed position, with
//     nothing relevant in between. This keeps a quiet users table from
//     pinning the database's WAL.
//  6. Transactions whose only inserts were filtered (anonymous users) are
//     treated the same way: confirmable, not written.
//
// Duplicates are still possible outside the listener (a reconcile that
// finds a user whose job is queued); the Enqueuer must tolerate them, and
// the unique index on api_keys is the real guard.
//
// # Faults
//
// Any connection loss, server restart or failed hand-off ends the session;
// the next one starts again from the checkpoint after capped exponential
// backoff (BackoffMin to BackoffMax, reset once a session commits work).
// Ending the session on a failed hand-off (rather than retrying on it)
// matters at shutdown: PostgreSQL waits for each WAL sender's client to
// confirm everything before it stops, and a client that kept answering
// with an old position would hold a fast shutdown up forever.
//
// SQLSTATE 55006 (object_in_use) at START_REPLICATION means another replica
// holds the slot: this one becomes a standby (Status().Role), polls
// pg_replication_slots every StandbyPollInterval and takes over when the
// slot is released.
//
// A slot that is missing while our checkpoint exists, or invalidated
// (wal_status = 'lost'), is recreated; in one transaction a reconcile is
// enqueued (Enqueuer.EnqueueReconcileTx) and the checkpoint moves to the new
// slot's position; the log says so at ERROR level. The checkpoint is set to
// 0/0 before the slot is replaced, and 0/0 means "a reconcile is owed"
// until that transaction commits, so a crash in between still ends in a
// reconcile, never in a silent gap. The first start (no slot yet) also
// enqueues a reconcile, for signups made between `worker migrate` and the
// slot's creation.
//
// # Preflight
//
// Start fails closed, with a *PreflightError whose message names the fix:
// ErrPooler (port 6543, *.pooler.supabase.com, or a replication handshake
// the server did not see), ErrServerVersion (before 15: no column lists),
// ErrWALLevel, ErrNoReplication, ErrNoFreeSlot, ErrNoWALSender, ErrNoTable,
// ErrNotMigrated, ErrNoPrivilege, ErrNotPublishable (with the statement),
// ErrPublicationMismatch, ErrSlotConflict and, in listen mode, ErrNoTrigger
// (with the statement). After Start, errors are retried and reported
// through Status.
package listener
