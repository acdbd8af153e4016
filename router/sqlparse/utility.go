package sqlparse

import (
	"strings"
	"unicode"

	pg "github.com/pganalyze/pg_query_go/v5"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// walkFields walks every message-typed field of n's node generically
// (protobuf reflection), so statements and expressions this package does
// not model are still searched for subqueries and relation names.
func (w *walker) walkFields(n *pg.Node, sc int) {
	w.walkMsg(n.ProtoReflect(), sc)
}

func (w *walker) walkMsg(m protoreflect.Message, sc int) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind || fd.IsMap() {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				w.walkAny(l.Get(i).Message(), sc)
			}
			return true
		}
		w.walkAny(v.Message(), sc)
		return true
	})
}

func (w *walker) walkAny(m protoreflect.Message, sc int) {
	switch x := m.Interface().(type) {
	case *pg.Node:
		w.expr(x, sc)
	case *pg.SelectStmt:
		w.selectStmt(x, sc, "sublink")
	case *pg.RangeVar:
		if !w.seen[x] {
			w.addRel(x, RoleRead, -1)
		}
	case *pg.FuncCall:
		w.funcCall(x, sc)
		w.walkMsg(m, sc)
	case *pg.ColumnRef, *pg.A_Const, *pg.ParamRef, *pg.String, *pg.TypeName:
	default:
		w.walkMsg(m, sc)
	}
}

// object records a relation a DDL or maintenance command acts on.
func (w *walker) object(rv *pg.RangeVar) {
	if rv != nil {
		w.addRel(rv, RoleObject, -1)
	}
}

// objectName records a relation given as a name list (DROP TABLE a.b).
func (w *walker) objectName(n *pg.Node) {
	l := n.GetList()
	if l == nil || len(l.Items) == 0 {
		return
	}
	var parts []string
	for _, it := range l.Items {
		parts = append(parts, it.GetString_().GetSval())
	}
	r := Rel{Name: parts[len(parts)-1], Role: RoleObject, Scope: -1}
	if len(parts) >= 2 {
		r.Schema = parts[len(parts)-2]
	}
	w.st.Rels = append(w.st.Rels, r)
}

// utility handles every statement that is not a query, DML, COPY,
// transaction control or SET/SHOW.
func (w *walker) utility(n *pg.Node) {
	st := w.st
	st.Kind = KindUtility
	u := &Utility{}
	st.Util = u
	inner := func(q *pg.Node) {
		if q != nil {
			u.Inner = analyzeStmt(q, w.text, st.Start, st.End)
		}
	}
	switch x := n.GetNode().(type) {
	case *pg.Node_ExplainStmt:
		st.Command = "EXPLAIN"
		for _, o := range x.ExplainStmt.Options {
			if d := o.GetDefElem(); d != nil && d.Defname == "analyze" {
				v, set := defElemString(d)
				u.Analyze = !set || v == "true" || v == "on" || v == "1"
			}
		}
		inner(x.ExplainStmt.Query)
	case *pg.Node_PrepareStmt:
		st.Command, u.Name = "PREPARE", x.PrepareStmt.Name
		inner(x.PrepareStmt.Query)
	case *pg.Node_ExecuteStmt:
		st.Command, u.Name = "EXECUTE", x.ExecuteStmt.Name
	case *pg.Node_DeallocateStmt:
		st.Command, u.Name = "DEALLOCATE", x.DeallocateStmt.Name
		if u.Name == "" {
			st.Command = "DEALLOCATE ALL"
		}
	case *pg.Node_ListenStmt:
		st.Command, u.Name = "LISTEN", x.ListenStmt.Conditionname
	case *pg.Node_UnlistenStmt:
		st.Command, u.Name = "UNLISTEN", x.UnlistenStmt.Conditionname
		if u.Name == "" {
			u.Name = "*"
		}
	case *pg.Node_NotifyStmt:
		st.Command, u.Name = "NOTIFY", x.NotifyStmt.Conditionname
	case *pg.Node_DiscardStmt:
		st.Command = "DISCARD"
		switch x.DiscardStmt.Target {
		case pg.DiscardMode_DISCARD_ALL:
			u.Name = "all"
		case pg.DiscardMode_DISCARD_PLANS:
			u.Name = "plans"
		case pg.DiscardMode_DISCARD_SEQUENCES:
			u.Name = "sequences"
		case pg.DiscardMode_DISCARD_TEMP:
			u.Name = "temp"
		}
	case *pg.Node_DeclareCursorStmt:
		st.Command, u.Name = "DECLARE CURSOR", x.DeclareCursorStmt.Portalname
		inner(x.DeclareCursorStmt.Query)
		o := x.DeclareCursorStmt.Options
		u.Cursor = &CursorDecl{Binary: o&cursorOptBinary != 0, Scroll: o&cursorOptScroll != 0, NoScroll: o&cursorOptNoScroll != 0, Hold: o&cursorOptHold != 0,
			Query: cursorQuery(w.text, st.Start, st.End)}
	case *pg.Node_FetchStmt:
		st.Command, u.Name = "FETCH", x.FetchStmt.Portalname
		if x.FetchStmt.Ismove {
			st.Command = "MOVE"
		}
		f := &Fetch{Direction: "forward", Count: x.FetchStmt.HowMany}
		switch x.FetchStmt.Direction {
		case pg.FetchDirection_FETCH_BACKWARD:
			f.Direction = "backward"
		case pg.FetchDirection_FETCH_ABSOLUTE:
			f.Direction = "absolute"
		case pg.FetchDirection_FETCH_RELATIVE:
			f.Direction = "relative"
		}
		u.Fetch = f
	case *pg.Node_ClosePortalStmt:
		st.Command, u.Name = "CLOSE CURSOR", x.ClosePortalStmt.Portalname
		if u.Name == "" {
			st.Command = "CLOSE CURSOR ALL"
		}
	case *pg.Node_CallStmt:
		st.Command = "CALL"
		if fc := x.CallStmt.Funccall; fc != nil {
			u.Name = lastName(fc.Funcname)
			w.addFunc(u.Name)
			w.exprs(fc.Args, -1)
		}
	case *pg.Node_DoStmt:
		st.Command = "DO"
	case *pg.Node_LoadStmt:
		st.Command = "LOAD"
	case *pg.Node_CheckPointStmt:
		st.Command = "CHECKPOINT"
	case *pg.Node_VacuumStmt:
		st.Command = "VACUUM"
		if !x.VacuumStmt.IsVacuumcmd {
			st.Command = "ANALYZE"
		}
		for _, r := range x.VacuumStmt.Rels {
			if vr := r.GetVacuumRelation(); vr != nil {
				w.object(vr.Relation)
			}
		}
	case *pg.Node_ClusterStmt:
		st.Command = "CLUSTER"
		w.object(x.ClusterStmt.Relation)
	case *pg.Node_ReindexStmt:
		st.Command = "REINDEX"
		if x.ReindexStmt.Kind == pg.ReindexObjectType_REINDEX_OBJECT_TABLE {
			w.object(x.ReindexStmt.Relation)
		}
	case *pg.Node_LockStmt:
		st.Command = "LOCK TABLE"
		for _, r := range x.LockStmt.Relations {
			w.object(r.GetRangeVar())
		}
	case *pg.Node_RefreshMatViewStmt:
		st.Command = "REFRESH MATERIALIZED VIEW"
		w.object(x.RefreshMatViewStmt.Relation)
	default:
		st.Util = nil
		w.ddl(n)
	}
}

// tableObject reports whether a DROP/ALTER/GRANT object type names a
// table-like relation (whose rows live on shards).
func tableObject(t pg.ObjectType) bool {
	switch t {
	case pg.ObjectType_OBJECT_TABLE, pg.ObjectType_OBJECT_VIEW, pg.ObjectType_OBJECT_MATVIEW,
		pg.ObjectType_OBJECT_FOREIGN_TABLE, pg.ObjectType_OBJECT_COLUMN, pg.ObjectType_OBJECT_TABCONSTRAINT:
		return true
	}
	return false
}

// ddl handles data definition: the relations it creates, alters or drops
// are objects; other relation names in it (REFERENCES, a view's query,
// CREATE TABLE AS's query) are reads.
func (w *walker) ddl(n *pg.Node) {
	st := w.st
	st.Kind, st.Write = KindDDL, true
	st.Command = commandName(n)
	st.Temp = tempDDL(n)
	switch x := n.GetNode().(type) {
	case *pg.Node_CreateStmt:
		st.Command = "CREATE TABLE"
		w.object(x.CreateStmt.Relation)
		for _, r := range x.CreateStmt.InhRelations {
			w.object(r.GetRangeVar())
		}
	case *pg.Node_IndexStmt:
		st.Command = "CREATE INDEX"
		w.object(x.IndexStmt.Relation)
	case *pg.Node_AlterTableStmt:
		switch x.AlterTableStmt.Objtype {
		case pg.ObjectType_OBJECT_TABLE, pg.ObjectType_OBJECT_FOREIGN_TABLE:
			st.Command = "ALTER TABLE"
			w.object(x.AlterTableStmt.Relation)
		case pg.ObjectType_OBJECT_VIEW, pg.ObjectType_OBJECT_MATVIEW:
			st.Command = "ALTER VIEW"
			w.object(x.AlterTableStmt.Relation)
		case pg.ObjectType_OBJECT_INDEX:
			st.Command = "ALTER INDEX"
			w.seen = map[*pg.RangeVar]bool{x.AlterTableStmt.Relation: true}
		case pg.ObjectType_OBJECT_SEQUENCE:
			st.Command = "ALTER SEQUENCE"
			w.seen = map[*pg.RangeVar]bool{x.AlterTableStmt.Relation: true}
		case pg.ObjectType_OBJECT_TYPE:
			// ALTER TYPE ... ADD/DROP/ALTER ATTRIBUTE: a type, which every
			// shard has, not a relation to route by.
			st.Command = "ALTER TYPE"
			w.seen = map[*pg.RangeVar]bool{x.AlterTableStmt.Relation: true}
		}
	case *pg.Node_CompositeTypeStmt:
		// CREATE TYPE name AS (...): its name is a RangeVar, but it names a
		// type for every shard (as CREATE TYPE ... AS ENUM does), not a
		// table of the default shard.
		st.Command = "CREATE TYPE"
		w.seen = map[*pg.RangeVar]bool{x.CompositeTypeStmt.Typevar: true}
	case *pg.Node_DropStmt:
		st.Command = "DROP " + objectTypeName(x.DropStmt.RemoveType)
		switch x.DropStmt.RemoveType {
		case pg.ObjectType_OBJECT_TABLE, pg.ObjectType_OBJECT_VIEW, pg.ObjectType_OBJECT_MATVIEW, pg.ObjectType_OBJECT_FOREIGN_TABLE:
			for _, o := range x.DropStmt.Objects {
				w.objectName(o)
			}
		}
		return
	case *pg.Node_TruncateStmt:
		st.Command = "TRUNCATE TABLE"
		for _, r := range x.TruncateStmt.Relations {
			if rv := r.GetRangeVar(); rv != nil {
				w.addRel(rv, RoleWrite, -1)
			}
		}
	case *pg.Node_CreateTableAsStmt:
		c := x.CreateTableAsStmt
		switch {
		case c.IsSelectInto:
			st.Command = "SELECT INTO"
		case c.Objtype == pg.ObjectType_OBJECT_MATVIEW:
			st.Command = "CREATE MATERIALIZED VIEW"
		default:
			st.Command = "CREATE TABLE AS"
		}
		if c.Into != nil {
			w.object(c.Into.Rel)
		}
		w.stmtScope(c.Query, -1, "")
		return
	case *pg.Node_ViewStmt:
		st.Command = "CREATE VIEW"
		w.object(x.ViewStmt.View)
		w.stmtScope(x.ViewStmt.Query, -1, "")
		return
	case *pg.Node_CreateTrigStmt:
		st.Command = "CREATE TRIGGER"
		w.object(x.CreateTrigStmt.Relation)
	case *pg.Node_RuleStmt:
		st.Command = "CREATE RULE"
		w.object(x.RuleStmt.Relation)
	case *pg.Node_CreatePolicyStmt:
		st.Command = "CREATE POLICY"
		w.object(x.CreatePolicyStmt.Table)
	case *pg.Node_RenameStmt:
		r := x.RenameStmt
		st.Command = "ALTER " + objectTypeName(r.RenameType)
		if r.RenameType == pg.ObjectType_OBJECT_COLUMN || r.RenameType == pg.ObjectType_OBJECT_TABCONSTRAINT {
			st.Command = "ALTER " + objectTypeName(r.RelationType)
		}
		if tableObject(r.RenameType) || tableObject(r.RelationType) && r.Relation != nil {
			w.object(r.Relation)
		} else if r.Relation != nil {
			w.seen = map[*pg.RangeVar]bool{r.Relation: true}
		}
	case *pg.Node_AlterObjectSchemaStmt:
		a := x.AlterObjectSchemaStmt
		st.Command = "ALTER " + objectTypeName(a.ObjectType)
		if tableObject(a.ObjectType) {
			w.object(a.Relation)
		} else if a.Relation != nil {
			w.seen = map[*pg.RangeVar]bool{a.Relation: true}
		}
	case *pg.Node_GrantStmt:
		g := x.GrantStmt
		st.Command = "GRANT"
		if !g.IsGrant {
			st.Command = "REVOKE"
		}
		st.Write = false
		if g.Objtype == pg.ObjectType_OBJECT_TABLE {
			for _, o := range g.Objects {
				w.object(o.GetRangeVar())
			}
		}
		return
	case *pg.Node_CommentStmt:
		c := x.CommentStmt
		st.Command = "COMMENT"
		if tableObject(c.Objtype) && c.Objtype != pg.ObjectType_OBJECT_COLUMN {
			w.objectName(c.Object)
		}
		return
	case *pg.Node_CreateSeqStmt:
		st.Command = "CREATE SEQUENCE"
		w.seen = map[*pg.RangeVar]bool{x.CreateSeqStmt.Sequence: true}
	case *pg.Node_AlterSeqStmt:
		st.Command = "ALTER SEQUENCE"
		w.seen = map[*pg.RangeVar]bool{x.AlterSeqStmt.Sequence: true}
	}
	w.walkFields(n, -1)
}

func objectTypeName(t pg.ObjectType) string {
	s := strings.TrimPrefix(t.String(), "OBJECT_")
	switch s {
	case "MATVIEW":
		return "MATERIALIZED VIEW"
	case "TABCONSTRAINT":
		return "TABLE"
	}
	return strings.ReplaceAll(s, "_", " ")
}

// commandName turns a statement node's type (CreateExtensionStmt) into a
// command name (CREATE EXTENSION).
func commandName(n *pg.Node) string {
	m := n.ProtoReflect()
	var name string
	m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if fd.Message() != nil {
			name = string(fd.Message().Name())
		}
		return false
	})
	name = strings.TrimSuffix(name, "Stmt")
	var b strings.Builder
	for i, r := range name {
		if i > 0 && unicode.IsUpper(r) {
			b.WriteByte(' ')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}

// tempDDL reports whether n defines, alters or drops functions,
// procedures, types or domains named in the temporary schema (Stmt.Temp).
func tempDDL(n *pg.Node) bool {
	switch x := n.GetNode().(type) {
	case *pg.Node_CreateFunctionStmt:
		return tempQualified(x.CreateFunctionStmt.Funcname)
	case *pg.Node_AlterFunctionStmt:
		return tempQualified(x.AlterFunctionStmt.GetFunc().GetObjname())
	case *pg.Node_DefineStmt:
		return tempQualified(x.DefineStmt.Defnames)
	case *pg.Node_CreateEnumStmt:
		return tempQualified(x.CreateEnumStmt.TypeName)
	case *pg.Node_CreateRangeStmt:
		return tempQualified(x.CreateRangeStmt.TypeName)
	case *pg.Node_CreateDomainStmt:
		return tempQualified(x.CreateDomainStmt.Domainname)
	case *pg.Node_CompositeTypeStmt:
		return tempSchema(x.CompositeTypeStmt.GetTypevar().GetSchemaname())
	case *pg.Node_DropStmt:
		switch x.DropStmt.RemoveType {
		case pg.ObjectType_OBJECT_FUNCTION, pg.ObjectType_OBJECT_PROCEDURE, pg.ObjectType_OBJECT_ROUTINE,
			pg.ObjectType_OBJECT_AGGREGATE, pg.ObjectType_OBJECT_TYPE, pg.ObjectType_OBJECT_DOMAIN:
		default:
			return false
		}
		for _, o := range x.DropStmt.Objects {
			var names []*pg.Node
			switch {
			case o.GetObjectWithArgs() != nil:
				names = o.GetObjectWithArgs().Objname
			case o.GetTypeName() != nil:
				names = o.GetTypeName().Names
			case o.GetList() != nil:
				names = o.GetList().Items
			}
			if !tempQualified(names) {
				return false
			}
		}
		return len(x.DropStmt.Objects) > 0
	}
	return false
}

// tempQualified reports whether a qualified name is in the temporary
// schema (pg_temp, or pg_temp_N spelt out).
func tempQualified(names []*pg.Node) bool {
	return len(names) >= 2 && tempSchema(names[0].GetString_().GetSval())
}

func tempSchema(s string) bool { return s == "pg_temp" || strings.HasPrefix(s, "pg_temp_") }

// noTxBlock reports whether Postgres refuses statement n inside a
// transaction block ("... cannot run inside a transaction block").
func noTxBlock(n *pg.Node) bool {
	switch x := n.GetNode().(type) {
	case *pg.Node_VacuumStmt:
		return x.VacuumStmt.IsVacuumcmd // ANALYZE alone may
	case *pg.Node_CreatedbStmt, *pg.Node_DropdbStmt, *pg.Node_CreateTableSpaceStmt, *pg.Node_DropTableSpaceStmt, *pg.Node_AlterSystemStmt:
		return true
	case *pg.Node_IndexStmt:
		return x.IndexStmt.Concurrent
	case *pg.Node_DropStmt:
		return x.DropStmt.Concurrent
	case *pg.Node_ClusterStmt:
		return x.ClusterStmt.Relation == nil // CLUSTER of every clustered table
	case *pg.Node_AlterTableStmt:
		for _, c := range x.AlterTableStmt.Cmds {
			if cmd := c.GetAlterTableCmd(); cmd != nil && cmd.Subtype == pg.AlterTableType_AT_DetachPartition {
				if pc := cmd.GetDef().GetPartitionCmd(); pc != nil && pc.Concurrent {
					return true
				}
			}
		}
	case *pg.Node_ReindexStmt:
		switch x.ReindexStmt.Kind {
		case pg.ReindexObjectType_REINDEX_OBJECT_SCHEMA, pg.ReindexObjectType_REINDEX_OBJECT_SYSTEM, pg.ReindexObjectType_REINDEX_OBJECT_DATABASE:
			return true
		}
		for _, p := range x.ReindexStmt.Params {
			if d := p.GetDefElem(); d != nil && d.Defname == "concurrently" {
				return true
			}
		}
	}
	return false
}

// DECLARE's options (Postgres's CURSOR_OPT_*).
const (
	cursorOptBinary   = 0x0001
	cursorOptScroll   = 0x0002
	cursorOptNoScroll = 0x0004
	cursorOptHold     = 0x0020
)

// cursorQuery returns the query of the DECLARE at text[start:end]: what
// follows the FOR after CURSOR, as Postgres's lexer finds them.
func cursorQuery(text string, start, end int) string {
	if start < 0 || end > len(text) || start >= end {
		return ""
	}
	sql := text[start:end]
	res, err := pg.Scan(sql)
	if err != nil {
		return ""
	}
	cursor := false
	for _, t := range res.Tokens {
		switch {
		case t.Token == pg.Token_CURSOR:
			cursor = true
		case cursor && t.Token == pg.Token_FOR && int(t.End) <= len(sql):
			return strings.TrimSpace(sql[t.End:])
		}
	}
	return ""
}
