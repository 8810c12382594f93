package listener

import (
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/keyworker/keyworker/users"
)

// relation is what the decoder keeps of a pgoutput Relation message: where
// the columns it needs are in the tuples of that relation. The cache of
// relations belongs to one replication connection: the server sends a
// Relation message before the first row of each relation on every new
// connection, and relation ids are only meaningful within it.
type relation struct {
	name string
	// ours is false for a relation that is not the users table (an operator
	// added a table to the publication); its rows are ignored.
	ours bool
	// Column positions in the tuple, -1 when absent; OIDs for decoding.
	id, createdAt, anonymous          int
	idOID, createdAtOID, anonymousOID uint32
}

func newRelation(m *pglogrepl.RelationMessage, t users.Table) (*relation, error) {
	r := &relation{name: m.Namespace + "." + m.RelationName, id: -1, createdAt: -1, anonymous: -1}
	if m.Namespace != t.Schema || m.RelationName != t.Name {
		return r, nil
	}
	r.ours = true
	for i, c := range m.Columns {
		switch c.Name {
		case t.IDColumn:
			r.id, r.idOID = i, c.DataType
		case t.CreatedAt():
			r.createdAt, r.createdAtOID = i, c.DataType
		case t.Anonymous():
			r.anonymous, r.anonymousOID = i, c.DataType
		}
	}
	if r.id < 0 {
		return nil, fmt.Errorf("the replication stream carries %s without its id column %q: check the publication's column list", r.name, t.IDColumn)
	}
	if t.Anonymous() != "" && r.anonymous < 0 {
		return nil, fmt.Errorf("the replication stream carries %s without its anonymous column %q: check the publication's column list", r.name, t.Anonymous())
	}
	return r, nil
}

// decode turns one inserted tuple into a Signup.
func (r *relation) decode(types *pgtype.Map, tuple *pglogrepl.TupleData) (users.Signup, error) {
	var s users.Signup
	if tuple == nil {
		return s, fmt.Errorf("insert into %s without a tuple", r.name)
	}
	col := func(i int) *pglogrepl.TupleDataColumn {
		if i < 0 || i >= len(tuple.Columns) {
			return nil
		}
		return tuple.Columns[i]
	}
	idc := col(r.id)
	if idc == nil || (idc.DataType != pglogrepl.TupleDataTypeText && idc.DataType != pglogrepl.TupleDataTypeBinary) {
		return s, fmt.Errorf("insert into %s without an id", r.name)
	}
	var id pgtype.UUID
	if err := types.Scan(r.idOID, format(idc), idc.Data, &id); err != nil || !id.Valid {
		return s, fmt.Errorf("decoding the id of a row inserted into %s: %w", r.name, err)
	}
	s.UserID = id.String()
	if c := col(r.createdAt); c != nil && (c.DataType == pglogrepl.TupleDataTypeText || c.DataType == pglogrepl.TupleDataTypeBinary) {
		var at time.Time
		if err := types.Scan(r.createdAtOID, format(c), c.Data, &at); err != nil {
			return s, fmt.Errorf("decoding created_at of user %s: %w", s.UserID, err)
		}
		s.CreatedAt = at
	}
	if c := col(r.anonymous); c != nil && (c.DataType == pglogrepl.TupleDataTypeText || c.DataType == pglogrepl.TupleDataTypeBinary) {
		var anon bool
		if err := types.Scan(r.anonymousOID, format(c), c.Data, &anon); err != nil {
			return s, fmt.Errorf("decoding the anonymous flag of user %s: %w", s.UserID, err)
		}
		s.Anonymous = anon
	}
	return s, nil
}

func format(c *pglogrepl.TupleDataColumn) int16 {
	if c.DataType == pglogrepl.TupleDataTypeBinary {
		return pgtype.BinaryFormatCode
	}
	return pgtype.TextFormatCode
}
