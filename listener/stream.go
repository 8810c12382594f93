package listener

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/keyworker/keyworker/users"
)

const (
	// ackPoll is how often the receiving goroutine looks for newly
	// committed hand-offs to acknowledge while some are in flight.
	ackPoll = 100 * time.Millisecond
	// ackMinGap spaces acknowledgements that only move the position.
	ackMinGap = 100 * time.Millisecond
	// finalAckTimeout bounds the last acknowledgement on the way out.
	finalAckTimeout = 5 * time.Second
)

// stream is one replication connection's worth of state. The receiving
// goroutine (run) owns the connection: it reads, decodes and sends every
// status message. The hand-off goroutine (write) owns the database writes.
// They share only the queue and the committed position, so a slow
// database never delays a status message.
type stream struct {
	l      *Logical
	conn   *pgconn.PgConn
	types  *pgtype.Map
	rels   map[uint32]*relation
	q      *queue
	maxQ   int
	skipTo pglogrepl.LSN // replays end at or below it

	// Receiver state.
	cur        *txn
	lastQueued pglogrepl.LSN
	idleTo     pglogrepl.LSN
	acked      pglogrepl.LSN
	lastSent   time.Time
	replyNow   bool

	// Shared with the writer.
	committed  atomic.Uint64 // everything at or below it is handed off
	crashed    atomic.Bool
	progressed atomic.Bool
	// writerErr carries the hand-off goroutine's failure; the session ends
	// on it.
	writerErr chan error
}

// txn is one replication transaction's signups.
type txn struct {
	end        pglogrepl.LSN
	commitAt   time.Time
	receivedAt time.Time
	signups    []users.Signup
	filtered   int
}

func newStream(l *Logical, conn *pgconn.PgConn, start slotStart) *stream {
	s := &stream{
		l:         l,
		conn:      conn,
		types:     pgtype.NewMap(),
		rels:      map[uint32]*relation{},
		q:         newQueue(),
		writerErr: make(chan error, 1),
		maxQ:      max(4*l.cfg.BatchMaxRows, 4000),
		skipTo:    start.checkpoint,
		acked:     start.confirmed,
	}
	base := max(start.checkpoint, start.confirmed)
	s.committed.Store(uint64(base))
	s.lastQueued = base
	return s
}

func (s *stream) inFlight() bool {
	return s.lastQueued > pglogrepl.LSN(s.committed.Load())
}

// confirmable is the position that is safe to confirm: everything at or
// below it is committed as jobs, or (idleTo) carried nothing for us.
func (s *stream) confirmable() pglogrepl.LSN {
	return max(pglogrepl.LSN(s.committed.Load()), s.idleTo, s.acked)
}

// run receives until the connection fails or ctx ends. On the way out it
// lets the hand-off in flight finish and sends the last acknowledgement.
func (s *stream) run(ctx context.Context) error {
	wctx, stopWriter := context.WithCancel(ctx)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		s.write(wctx)
	}()
	err := s.receive(ctx)
	stopWriter()
	<-writerDone
	if s.crashed.Load() {
		return errCrashed
	}
	if ctx.Err() != nil {
		// Stopping: acknowledge what the last hand-off committed.
		_ = s.conn.Conn().SetWriteDeadline(time.Now().Add(finalAckTimeout))
		if ackErr := s.sendStatus(true); ackErr != nil {
			s.l.log.Warn("sending the last acknowledgement", "error", ackErr)
		}
		return ctx.Err()
	}
	return err
}

func (s *stream) receive(ctx context.Context) error {
	interval := s.l.cfg.StatusInterval
	s.lastSent = time.Now()
	// Confirm our checkpoint at once: after a crash between a commit and
	// its acknowledgement it is ahead of the slot.
	if err := s.sendStatus(true); err != nil {
		return err
	}
	for {
		if s.crashed.Load() {
			return errCrashed
		}
		select {
		case err := <-s.writerErr:
			return err
		default:
		}
		if err := s.sendStatus(false); err != nil {
			return err
		}
		now := time.Now()
		wake := s.lastSent.Add(interval)
		if s.inFlight() || s.confirmable() > s.acked {
			if poll := now.Add(ackPoll); poll.Before(wake) {
				wake = poll
			}
		}
		if s.q.rows() >= s.maxQ {
			// Backpressure: let the hand-off catch up, but keep the status
			// messages going.
			t := time.NewTimer(time.Until(wake))
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case err := <-s.writerErr:
				t.Stop()
				return err
			case <-s.q.freed:
			case <-t.C:
			}
			t.Stop()
			continue
		}
		rctx, cancel := context.WithDeadline(ctx, wake)
		msg, err := s.conn.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("receiving from the replication stream: %w", err)
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if err := s.handle(msg.Data); err != nil {
				return err
			}
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone:
			return errors.New("the server ended the replication stream")
		}
	}
}

// sendStatus confirms the confirmable position, with write, flush and
// apply all set to it, when one is due: the server asked, the position
// moved, or StatusInterval passed since the last one. force sends anyway.
func (s *stream) sendStatus(force bool) error {
	pos := s.confirmable()
	now := time.Now()
	since := now.Sub(s.lastSent)
	if !force && !s.replyNow && since < s.l.cfg.StatusInterval && (pos <= s.acked || since < ackMinGap) {
		return nil
	}
	if s.crashed.Load() {
		return errCrashed
	}
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), s.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pos,
		WALFlushPosition: pos,
		WALApplyPosition: pos,
		ClientTime:       now,
	})
	if err != nil {
		return fmt.Errorf("sending a status message: %w", err)
	}
	s.acked, s.lastSent, s.replyNow = pos, now, false
	s.l.st.update(func(st *Status) { st.Confirmed = pos })
	return nil
}

// handle processes one CopyData message of the stream.
func (s *stream) handle(data []byte) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		k, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("parsing a keepalive: %w", err)
		}
		if k.ReplyRequested {
			s.replyNow = true
		}
		// Everything the server sent before this keepalive has arrived. If
		// none of it is still on its way to a commit, nothing at or below
		// ServerWALEnd concerns us: confirm it, so a quiet users table does
		// not hold WAL back.
		if s.cur == nil && !s.inFlight() && k.ServerWALEnd > s.idleTo {
			s.idleTo = k.ServerWALEnd
		}
		return nil
	case pglogrepl.XLogDataByteID:
		x, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("parsing XLogData: %w", err)
		}
		return s.decode(x.WALData)
	}
	return nil
}

func (s *stream) decode(wal []byte) error {
	m, err := pglogrepl.Parse(wal)
	if err != nil {
		return fmt.Errorf("parsing a pgoutput message: %w", err)
	}
	switch m := m.(type) {
	case *pglogrepl.RelationMessage:
		r, err := newRelation(m, s.l.cfg.Table)
		if err != nil {
			return err
		}
		if !r.ours {
			s.l.log.Warn("the publication carries a table other than the users table; its rows are ignored", "table", r.name)
		}
		s.rels[m.RelationID] = r
	case *pglogrepl.BeginMessage:
		s.cur = &txn{commitAt: m.CommitTime}
	case *pglogrepl.InsertMessage:
		if s.cur == nil {
			return errors.New("replication stream: an insert outside a transaction")
		}
		r := s.rels[m.RelationID]
		if r == nil {
			return fmt.Errorf("replication stream: an insert into relation %d before its Relation message", m.RelationID)
		}
		if !r.ours {
			return nil
		}
		su, err := r.decode(s.types, m.Tuple)
		if err != nil {
			return err
		}
		if su.Anonymous && !s.l.cfg.IncludeAnonymous {
			s.cur.filtered++
			return nil
		}
		s.cur.signups = append(s.cur.signups, su)
	case *pglogrepl.CommitMessage:
		t := s.cur
		s.cur = nil
		if t == nil {
			return errors.New("replication stream: a commit without a transaction")
		}
		t.end = m.TransactionEndLSN
		if t.end <= s.skipTo {
			// A replay: its signups were committed as jobs before the last
			// acknowledgement reached the server.
			s.l.st.update(func(st *Status) { st.Replays++ })
			return nil
		}
		for i := range t.signups {
			t.signups[i].EndLSN = t.end
		}
		if t.filtered > 0 {
			n := uint64(t.filtered)
			s.l.st.update(func(st *Status) { st.Filtered += n })
		}
		t.receivedAt = time.Now()
		s.q.push(t)
		s.lastQueued = t.end
	}
	return nil
}
