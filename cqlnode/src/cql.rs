//! The CQL subset: a lexer and a recursive-descent parser producing [`Statement`]s.
//!
//! Hand-written instead of using `cql3-parser`: that crate wraps a tree-sitter grammar (C code,
//! a build script, bigdecimal and num-bigint) to cover all of CQL, while this node needs a
//! dozen statement shapes and, for every `?`, to know what it is bound to (a column, `LIMIT`,
//! a `token()` bound, an `IN` list), which the prepared metadata must describe.

use uuid::Uuid;

use crate::value::CqlType;

/// A table or keyspace-qualified table name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualifiedName {
    pub keyspace: Option<String>,
    pub name: String,
}

/// A literal written in the statement text.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    /// A number as written (sign included); converted once the column type is known.
    Num(String),
    Bool(bool),
    Uuid(Uuid),
    Blob(Vec<u8>),
    Null,
}

/// A value position: a literal or the `n`-th bind marker.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    Bind(usize),
    Lit(Literal),
}

/// What a bind marker stands for; decides its name and type in the prepared metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    /// A value of this column (assignments, equalities, ranges, conditions).
    Column(String),
    /// `col IN ?`: a whole list of values of this column.
    InList(String),
    /// A bound of `token(...)`.
    Token,
    Limit,
    Ttl,
    Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Left-hand side of a `WHERE` relation.
#[derive(Debug, Clone, PartialEq)]
pub enum Lhs {
    Column(String),
    Token(Vec<String>),
}

/// One `WHERE` relation.
#[derive(Debug, Clone, PartialEq)]
pub enum Relation {
    Compare {
        lhs: Lhs,
        op: Op,
        rhs: Term,
    },
    /// `col IN (t1, t2, ...)`.
    InTerms {
        column: String,
        terms: Vec<Term>,
    },
    /// `col IN ?`.
    InMarker {
        column: String,
        marker: Term,
    },
}

/// `SET` clause items.
#[derive(Debug, Clone, PartialEq)]
pub enum Assignment {
    Set {
        column: String,
        value: Term,
    },
    /// `c = c + ?` (`negate` for `c = c - ?`).
    Counter {
        column: String,
        delta: Term,
        negate: bool,
    },
}

/// The optional `IF` clause of a write (a lightweight transaction).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Condition {
    #[default]
    None,
    IfExists,
    /// `IF col = t AND ...` (equality only).
    Columns(Vec<(String, Term)>),
}

impl Condition {
    pub fn is_some(&self) -> bool {
        !matches!(self, Condition::None)
    }
}

/// `USING TTL ... AND TIMESTAMP ...`: accepted and ignored (no expiry, last write wins by order).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Using {
    pub ttl: Option<Term>,
    pub timestamp: Option<Term>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    Column { name: String, alias: Option<String> },
    CountAll { alias: Option<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    All,
    Selectors(Vec<Selector>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    Logged,
    Unlogged,
    Counter,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDef {
    pub name: String,
    pub ty: CqlType,
}

/// A parsed statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    CreateKeyspace {
        name: String,
        if_not_exists: bool,
        replication: Vec<(String, String)>,
        durable_writes: bool,
        /// `AND tablets = {...}` (ScyllaDB 6.0+), when given; whether the node accepts it is
        /// the engine's decision (see `NodeConfig::tablets`).
        tablets: Option<Vec<(String, String)>>,
    },
    CreateTable {
        table: QualifiedName,
        if_not_exists: bool,
        columns: Vec<ColumnDef>,
        partition_key: Vec<String>,
        clustering: Vec<String>,
        /// Columns declared `DESC` in `WITH CLUSTERING ORDER BY`.
        descending: Vec<String>,
    },
    DropKeyspace {
        name: String,
        if_exists: bool,
    },
    DropTable {
        table: QualifiedName,
        if_exists: bool,
    },
    Truncate {
        table: QualifiedName,
    },
    Use {
        keyspace: String,
    },
    Insert {
        table: QualifiedName,
        columns: Vec<String>,
        values: Vec<Term>,
        if_not_exists: bool,
        using: Using,
    },
    Update {
        table: QualifiedName,
        assignments: Vec<Assignment>,
        relations: Vec<Relation>,
        condition: Condition,
        using: Using,
    },
    Delete {
        table: QualifiedName,
        /// Empty: delete whole rows.
        columns: Vec<String>,
        relations: Vec<Relation>,
        condition: Condition,
        using: Using,
    },
    Select {
        table: QualifiedName,
        selection: Selection,
        relations: Vec<Relation>,
        /// `(column, descending)` of `ORDER BY`.
        order_by: Vec<(String, bool)>,
        limit: Option<Term>,
        allow_filtering: bool,
    },
    /// `BEGIN BATCH ... APPLY BATCH` sent as one query string.
    Batch {
        kind: BatchKind,
        statements: Vec<Statement>,
    },
}

impl Statement {
    /// The table a DML statement or `SELECT` works on.
    pub fn table(&self) -> Option<&QualifiedName> {
        match self {
            Statement::CreateTable { table, .. }
            | Statement::DropTable { table, .. }
            | Statement::Truncate { table }
            | Statement::Insert { table, .. }
            | Statement::Update { table, .. }
            | Statement::Delete { table, .. }
            | Statement::Select { table, .. } => Some(table),
            _ => None,
        }
    }
}

/// A statement with the targets of its bind markers, in order of appearance.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub statement: Statement,
    pub markers: Vec<Marker>,
}

/// A syntax error, answered with error code 0x2000.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SyntaxError(pub String);

/// Parses one statement (a trailing `;` is allowed).
pub fn parse(text: &str) -> Result<Parsed, SyntaxError> {
    let tokens = lex(text)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        markers: Vec::new(),
    };
    let statement = p.statement()?;
    p.eat_sym(";");
    if p.pos < p.tokens.len() {
        return Err(p.error("end of statement"));
    }
    Ok(Parsed {
        statement,
        markers: p.markers,
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// Unquoted identifier or keyword, lowercased.
    Ident(String),
    /// `"Quoted"` identifier, case kept.
    Quoted(String),
    Str(String),
    Num(String),
    Uuid(Uuid),
    Hex(Vec<u8>),
    Sym(&'static str),
    Qmark,
}

fn lex(text: &str) -> Result<Vec<Tok>, SyntaxError> {
    const SYMS: [&str; 16] = [
        "<=", ">=", "!=", "(", ")", ",", ";", ".", "=", "<", ">", "*", "+", "-", "{", "}",
    ];
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '\'' || c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(SyntaxError("unterminated string".into())),
                    Some(&q) if q == c => {
                        if chars.get(i + 1) == Some(&c) {
                            s.push(c);
                            i += 2;
                        } else {
                            i += 1;
                            break;
                        }
                    }
                    Some(&ch) => {
                        s.push(ch);
                        i += 1;
                    }
                }
            }
            out.push(if c == '\'' {
                Tok::Str(s)
            } else {
                Tok::Quoted(s)
            });
        } else if let Some(u) = uuid_at(&chars, i) {
            out.push(Tok::Uuid(u));
            i += 36;
        } else if c == '0'
            && matches!(chars.get(i + 1), Some('x' | 'X'))
            && chars.get(i + 2).is_some_and(|c| c.is_ascii_hexdigit())
        {
            let start = i + 2;
            i = start;
            while i < chars.len() && chars[i].is_ascii_hexdigit() {
                i += 1;
            }
            let hex: String = chars[start..i].iter().collect();
            out.push(Tok::Hex(decode_hex(&hex)?));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || chars[i] == '.'
                    || chars[i] == 'e'
                    || chars[i] == 'E'
                    || ((chars[i] == '+' || chars[i] == '-') && matches!(chars[i - 1], 'e' | 'E')))
            {
                i += 1;
            }
            out.push(Tok::Num(chars[start..i].iter().collect()));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            out.push(Tok::Ident(word.to_lowercase()));
        } else if c == '?' {
            out.push(Tok::Qmark);
            i += 1;
        } else if let Some(sym) = SYMS.iter().find(|s| {
            let s: Vec<char> = s.chars().collect();
            chars[i..].starts_with(&s)
        }) {
            out.push(Tok::Sym(sym));
            i += sym.len();
        } else if c == ':' {
            out.push(Tok::Sym(":"));
            i += 1;
        } else {
            return Err(SyntaxError(format!("unexpected character {c:?}")));
        }
    }
    Ok(out)
}

/// A UUID literal (`8-4-4-4-12` hex digits) starting at `i`, not followed by a word character.
fn uuid_at(chars: &[char], i: usize) -> Option<Uuid> {
    let candidate = chars.get(i..i + 36)?;
    let shape_ok = candidate.iter().enumerate().all(|(k, c)| {
        if matches!(k, 8 | 13 | 18 | 23) {
            *c == '-'
        } else {
            c.is_ascii_hexdigit()
        }
    });
    let ends = chars
        .get(i + 36)
        .is_none_or(|c| !(c.is_alphanumeric() || *c == '_'));
    if !shape_ok || !ends {
        return None;
    }
    Uuid::parse_str(&candidate.iter().collect::<String>()).ok()
}

fn decode_hex(hex: &str) -> Result<Vec<u8>, SyntaxError> {
    if !hex.len().is_multiple_of(2) {
        return Err(SyntaxError(
            "blob literal with an odd number of hex digits".into(),
        ));
    }
    (0..hex.len())
        .step_by(2)
        .map(|k| {
            u8::from_str_radix(&hex[k..k + 2], 16)
                .map_err(|_| SyntaxError("invalid blob literal".into()))
        })
        .collect()
}

struct Parser {
    tokens: Vec<Tok>,
    pos: usize,
    markers: Vec<Marker>,
}

impl Parser {
    fn error(&self, expected: &str) -> SyntaxError {
        match self.tokens.get(self.pos) {
            Some(t) => SyntaxError(format!(
                "line 1: expected {expected}, found {}",
                describe(t)
            )),
            None => SyntaxError(format!(
                "line 1: expected {expected}, found end of statement"
            )),
        }
    }

    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos)
    }

    fn peek_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(w)) if w == kw)
    }

    fn peek_kw_at(&self, offset: usize, kw: &str) -> bool {
        matches!(self.tokens.get(self.pos + offset), Some(Tok::Ident(w)) if w == kw)
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.peek_kw(kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn kw(&mut self, kw: &str) -> Result<(), SyntaxError> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.error(&kw.to_uppercase()))
        }
    }

    fn eat_sym(&mut self, sym: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Sym(s)) if *s == sym) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn sym(&mut self, sym: &str) -> Result<(), SyntaxError> {
        if self.eat_sym(sym) {
            Ok(())
        } else {
            Err(self.error(&format!("'{sym}'")))
        }
    }

    fn ident(&mut self) -> Result<String, SyntaxError> {
        match self.peek() {
            Some(Tok::Ident(w)) | Some(Tok::Quoted(w)) => {
                let w = w.clone();
                self.pos += 1;
                Ok(w)
            }
            _ => Err(self.error("an identifier")),
        }
    }

    fn qualified(&mut self) -> Result<QualifiedName, SyntaxError> {
        let first = self.ident()?;
        if self.eat_sym(".") {
            let name = self.ident()?;
            Ok(QualifiedName {
                keyspace: Some(first),
                name,
            })
        } else {
            Ok(QualifiedName {
                keyspace: None,
                name: first,
            })
        }
    }

    fn if_not_exists(&mut self) -> Result<bool, SyntaxError> {
        if self.peek_kw("if") && self.peek_kw_at(1, "not") {
            self.pos += 2;
            self.kw("exists")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn if_exists(&mut self) -> Result<bool, SyntaxError> {
        if self.peek_kw("if") && self.peek_kw_at(1, "exists") {
            self.pos += 2;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn statement(&mut self) -> Result<Statement, SyntaxError> {
        match self.peek() {
            Some(Tok::Ident(w)) => match w.as_str() {
                "create" => self.create(),
                "drop" => self.drop(),
                "truncate" => {
                    self.pos += 1;
                    self.eat_kw("table");
                    Ok(Statement::Truncate {
                        table: self.qualified()?,
                    })
                }
                "use" => {
                    self.pos += 1;
                    Ok(Statement::Use {
                        keyspace: self.ident()?,
                    })
                }
                "insert" => self.insert(),
                "update" => self.update(),
                "delete" => self.delete(),
                "select" => self.select(),
                "begin" => self.batch(),
                _ => Err(self.error("a statement")),
            },
            _ => Err(self.error("a statement")),
        }
    }

    fn create(&mut self) -> Result<Statement, SyntaxError> {
        self.kw("create")?;
        if self.eat_kw("keyspace") || self.eat_kw("schema") {
            let if_not_exists = self.if_not_exists()?;
            let name = self.ident()?;
            let mut replication = Vec::new();
            let mut durable_writes = true;
            let mut tablets = None;
            if self.eat_kw("with") {
                loop {
                    let option = self.ident()?;
                    self.sym("=")?;
                    match option.as_str() {
                        "replication" => replication = self.string_map()?,
                        "tablets" => tablets = Some(self.string_map()?),
                        "durable_writes" => {
                            durable_writes = match self.literal()? {
                                Literal::Bool(b) => b,
                                _ => {
                                    return Err(SyntaxError(
                                        "durable_writes must be a boolean".into(),
                                    ));
                                }
                            }
                        }
                        _ => self.skip_option_value()?,
                    }
                    if !self.eat_kw("and") {
                        break;
                    }
                }
            }
            return Ok(Statement::CreateKeyspace {
                name,
                if_not_exists,
                replication,
                durable_writes,
                tablets,
            });
        }
        if self.eat_kw("table") || self.eat_kw("columnfamily") {
            return self.create_table();
        }
        Err(self.error("KEYSPACE or TABLE (CREATE INDEX, TYPE, ... are not supported)"))
    }

    fn create_table(&mut self) -> Result<Statement, SyntaxError> {
        let if_not_exists = self.if_not_exists()?;
        let table = self.qualified()?;
        self.sym("(")?;
        let mut columns = Vec::new();
        let mut partition_key = Vec::new();
        let mut clustering = Vec::new();
        loop {
            if self.peek_kw("primary") && self.peek_kw_at(1, "key") {
                self.pos += 2;
                self.sym("(")?;
                if self.eat_sym("(") {
                    partition_key.push(self.ident()?);
                    while self.eat_sym(",") {
                        partition_key.push(self.ident()?);
                    }
                    self.sym(")")?;
                } else {
                    partition_key.push(self.ident()?);
                }
                while self.eat_sym(",") {
                    clustering.push(self.ident()?);
                }
                self.sym(")")?;
            } else {
                let name = self.ident()?;
                let type_name = self.ident()?;
                if self.peek() == Some(&Tok::Sym("<")) {
                    return Err(SyntaxError(format!(
                        "column {name}: collection, frozen and tuple types are not supported by this test node"
                    )));
                }
                let ty = CqlType::from_name(&type_name).ok_or_else(|| {
                    SyntaxError(format!("column {name}: unsupported type {type_name}"))
                })?;
                if self.eat_kw("static") {
                    return Err(SyntaxError(
                        "static columns are not supported by this test node".into(),
                    ));
                }
                if self.peek_kw("primary") && self.peek_kw_at(1, "key") {
                    self.pos += 2;
                    partition_key.push(name.clone());
                }
                columns.push(ColumnDef { name, ty });
            }
            if !self.eat_sym(",") {
                break;
            }
        }
        self.sym(")")?;
        let mut descending = Vec::new();
        if self.eat_kw("with") {
            loop {
                if self.eat_kw("clustering") {
                    self.kw("order")?;
                    self.kw("by")?;
                    self.sym("(")?;
                    loop {
                        let column = self.ident()?;
                        if self.eat_kw("desc") {
                            descending.push(column);
                        } else {
                            self.eat_kw("asc");
                        }
                        if !self.eat_sym(",") {
                            break;
                        }
                    }
                    self.sym(")")?;
                } else if self.eat_kw("compact") {
                    self.kw("storage")?;
                } else {
                    self.ident()?;
                    while self.eat_sym(".") {
                        self.ident()?;
                    }
                    self.sym("=")?;
                    self.skip_option_value()?;
                }
                if !self.eat_kw("and") {
                    break;
                }
            }
        }
        Ok(Statement::CreateTable {
            table,
            if_not_exists,
            columns,
            partition_key,
            clustering,
            descending,
        })
    }

    /// `{'k': 'v', 'n': 3}` with string keys and scalar values, kept as text.
    fn string_map(&mut self) -> Result<Vec<(String, String)>, SyntaxError> {
        self.sym("{")?;
        let mut out = Vec::new();
        if self.eat_sym("}") {
            return Ok(out);
        }
        loop {
            let key = match self.literal()? {
                Literal::Str(s) => s,
                _ => return Err(SyntaxError("map keys must be strings".into())),
            };
            self.sym(":")?;
            let value = match self.literal()? {
                Literal::Str(s) | Literal::Num(s) => s,
                Literal::Bool(b) => b.to_string(),
                other => return Err(SyntaxError(format!("unsupported option value {other:?}"))),
            };
            out.push((key, value));
            if !self.eat_sym(",") {
                break;
            }
        }
        self.sym("}")?;
        Ok(out)
    }

    /// Skips the value of an ignored `WITH` option: a literal or a `{...}` map.
    fn skip_option_value(&mut self) -> Result<(), SyntaxError> {
        if self.peek() == Some(&Tok::Sym("{")) {
            let mut depth = 0usize;
            loop {
                match self.peek() {
                    Some(Tok::Sym("{")) => depth += 1,
                    Some(Tok::Sym("}")) => depth = depth.saturating_sub(1),
                    None => return Err(self.error("'}'")),
                    _ => {}
                }
                self.pos += 1;
                if depth == 0 {
                    return Ok(());
                }
            }
        }
        self.literal().map(|_| ())
    }

    fn drop(&mut self) -> Result<Statement, SyntaxError> {
        self.kw("drop")?;
        if self.eat_kw("keyspace") || self.eat_kw("schema") {
            let if_exists = self.if_exists()?;
            return Ok(Statement::DropKeyspace {
                if_exists,
                name: self.ident()?,
            });
        }
        if self.eat_kw("table") || self.eat_kw("columnfamily") {
            let if_exists = self.if_exists()?;
            return Ok(Statement::DropTable {
                if_exists,
                table: self.qualified()?,
            });
        }
        Err(self.error("KEYSPACE or TABLE"))
    }

    fn marker(&mut self, target: Marker) -> Term {
        self.markers.push(target);
        Term::Bind(self.markers.len() - 1)
    }

    /// A value position bound to `target` if it is a `?`.
    fn term(&mut self, target: Marker) -> Result<Term, SyntaxError> {
        if self.peek() == Some(&Tok::Qmark) {
            self.pos += 1;
            return Ok(self.marker(target));
        }
        if matches!(self.peek(), Some(Tok::Sym(":"))) {
            return Err(SyntaxError(
                "named bind markers are not supported; use '?'".into(),
            ));
        }
        Ok(Term::Lit(self.literal()?))
    }

    fn literal(&mut self) -> Result<Literal, SyntaxError> {
        let negative = self.eat_sym("-");
        let tok = self
            .peek()
            .cloned()
            .ok_or_else(|| self.error("a literal"))?;
        let lit = match tok {
            Tok::Num(n) if negative => Literal::Num(format!("-{n}")),
            Tok::Num(n) => Literal::Num(n),
            _ if negative => return Err(self.error("a number")),
            Tok::Str(s) => Literal::Str(s),
            Tok::Uuid(u) => Literal::Uuid(u),
            Tok::Hex(b) => Literal::Blob(b),
            Tok::Ident(w) if w == "true" => Literal::Bool(true),
            Tok::Ident(w) if w == "false" => Literal::Bool(false),
            Tok::Ident(w) if w == "null" => Literal::Null,
            _ => return Err(self.error("a literal")),
        };
        self.pos += 1;
        Ok(lit)
    }

    fn using(&mut self, using: &mut Using) -> Result<(), SyntaxError> {
        if !self.eat_kw("using") {
            return Ok(());
        }
        loop {
            if self.eat_kw("ttl") {
                using.ttl = Some(self.term(Marker::Ttl)?);
            } else if self.eat_kw("timestamp") {
                using.timestamp = Some(self.term(Marker::Timestamp)?);
            } else {
                return Err(self.error("TTL or TIMESTAMP"));
            }
            if !self.eat_kw("and") {
                return Ok(());
            }
        }
    }

    fn insert(&mut self) -> Result<Statement, SyntaxError> {
        self.kw("insert")?;
        self.kw("into")?;
        let table = self.qualified()?;
        if self.peek_kw("json") {
            return Err(SyntaxError(
                "INSERT JSON is not supported by this test node".into(),
            ));
        }
        self.sym("(")?;
        let mut columns = vec![self.ident()?];
        while self.eat_sym(",") {
            columns.push(self.ident()?);
        }
        self.sym(")")?;
        self.kw("values")?;
        self.sym("(")?;
        let mut values = Vec::new();
        loop {
            let column = columns.get(values.len()).cloned().unwrap_or_default();
            values.push(self.term(Marker::Column(column))?);
            if !self.eat_sym(",") {
                break;
            }
        }
        self.sym(")")?;
        if values.len() != columns.len() {
            return Err(SyntaxError(format!(
                "unmatched column names/values: {} columns, {} values",
                columns.len(),
                values.len()
            )));
        }
        let mut using = Using::default();
        let mut if_not_exists = self.if_not_exists()?;
        self.using(&mut using)?;
        if !if_not_exists {
            if_not_exists = self.if_not_exists()?;
        }
        Ok(Statement::Insert {
            table,
            columns,
            values,
            if_not_exists,
            using,
        })
    }

    fn update(&mut self) -> Result<Statement, SyntaxError> {
        self.kw("update")?;
        let table = self.qualified()?;
        let mut using = Using::default();
        self.using(&mut using)?;
        self.kw("set")?;
        let mut assignments = Vec::new();
        loop {
            let column = self.ident()?;
            self.sym("=")?;
            let is_self_reference = matches!(self.peek(), Some(Tok::Ident(w)) | Some(Tok::Quoted(w)) if *w == column)
                && matches!(self.tokens.get(self.pos + 1), Some(Tok::Sym("+" | "-")));
            if is_self_reference {
                self.pos += 1;
                let negate = self.eat_sym("-");
                if !negate {
                    self.sym("+")?;
                }
                let delta = self.term(Marker::Column(column.clone()))?;
                assignments.push(Assignment::Counter {
                    column,
                    delta,
                    negate,
                });
            } else {
                let value = self.term(Marker::Column(column.clone()))?;
                assignments.push(Assignment::Set { column, value });
            }
            if !self.eat_sym(",") {
                break;
            }
        }
        let relations = self.where_clause()?;
        let condition = self.condition()?;
        Ok(Statement::Update {
            table,
            assignments,
            relations,
            condition,
            using,
        })
    }

    fn delete(&mut self) -> Result<Statement, SyntaxError> {
        self.kw("delete")?;
        let mut columns = Vec::new();
        if !self.peek_kw("from") {
            columns.push(self.ident()?);
            while self.eat_sym(",") {
                columns.push(self.ident()?);
            }
        }
        self.kw("from")?;
        let table = self.qualified()?;
        let mut using = Using::default();
        self.using(&mut using)?;
        let relations = self.where_clause()?;
        let condition = self.condition()?;
        Ok(Statement::Delete {
            table,
            columns,
            relations,
            condition,
            using,
        })
    }

    fn condition(&mut self) -> Result<Condition, SyntaxError> {
        if self.if_exists()? {
            return Ok(Condition::IfExists);
        }
        if !self.eat_kw("if") {
            return Ok(Condition::None);
        }
        let mut conditions = Vec::new();
        loop {
            let column = self.ident()?;
            if !self.eat_sym("=") {
                return Err(SyntaxError(
                    "only equality conditions (IF col = value) are supported by this test node"
                        .into(),
                ));
            }
            let value = self.term(Marker::Column(column.clone()))?;
            conditions.push((column, value));
            if !self.eat_kw("and") {
                break;
            }
        }
        Ok(Condition::Columns(conditions))
    }

    fn where_clause(&mut self) -> Result<Vec<Relation>, SyntaxError> {
        let mut relations = Vec::new();
        if !self.eat_kw("where") {
            return Ok(relations);
        }
        loop {
            relations.push(self.relation()?);
            if !self.eat_kw("and") {
                return Ok(relations);
            }
        }
    }

    fn op(&mut self) -> Result<Op, SyntaxError> {
        let op = match self.peek() {
            Some(Tok::Sym("=")) => Op::Eq,
            Some(Tok::Sym("<")) => Op::Lt,
            Some(Tok::Sym("<=")) => Op::Le,
            Some(Tok::Sym(">")) => Op::Gt,
            Some(Tok::Sym(">=")) => Op::Ge,
            _ => return Err(self.error("a comparison operator (=, <, <=, >, >=, IN)")),
        };
        self.pos += 1;
        Ok(op)
    }

    fn relation(&mut self) -> Result<Relation, SyntaxError> {
        if self.peek_kw("token") && self.tokens.get(self.pos + 1) == Some(&Tok::Sym("(")) {
            self.pos += 2;
            let mut columns = vec![self.ident()?];
            while self.eat_sym(",") {
                columns.push(self.ident()?);
            }
            self.sym(")")?;
            let op = self.op()?;
            let rhs = self.term(Marker::Token)?;
            return Ok(Relation::Compare {
                lhs: Lhs::Token(columns),
                op,
                rhs,
            });
        }
        if self.peek() == Some(&Tok::Sym("(")) {
            return Err(SyntaxError(
                "multi-column relations are not supported by this test node".into(),
            ));
        }
        let column = self.ident()?;
        if self.eat_kw("in") {
            if self.peek() == Some(&Tok::Qmark) {
                self.pos += 1;
                let marker = self.marker(Marker::InList(column.clone()));
                return Ok(Relation::InMarker { column, marker });
            }
            self.sym("(")?;
            let mut terms = Vec::new();
            if !self.eat_sym(")") {
                loop {
                    terms.push(self.term(Marker::Column(column.clone()))?);
                    if !self.eat_sym(",") {
                        break;
                    }
                }
                self.sym(")")?;
            }
            return Ok(Relation::InTerms { column, terms });
        }
        let op = self.op()?;
        let rhs = self.term(Marker::Column(column.clone()))?;
        Ok(Relation::Compare {
            lhs: Lhs::Column(column),
            op,
            rhs,
        })
    }

    fn select(&mut self) -> Result<Statement, SyntaxError> {
        self.kw("select")?;
        if self.peek_kw("json") || self.peek_kw("distinct") {
            return Err(SyntaxError(
                "SELECT JSON/DISTINCT is not supported by this test node".into(),
            ));
        }
        let selection = if self.eat_sym("*") {
            Selection::All
        } else {
            let mut selectors = Vec::new();
            loop {
                let selector = if self.peek_kw("count")
                    && self.tokens.get(self.pos + 1) == Some(&Tok::Sym("("))
                {
                    self.pos += 2;
                    if !self.eat_sym("*") {
                        match self.literal()? {
                            Literal::Num(n) if n == "1" => {}
                            _ => return Err(self.error("'*' or 1 in COUNT()")),
                        }
                    }
                    self.sym(")")?;
                    Selector::CountAll {
                        alias: self.alias()?,
                    }
                } else {
                    let name = self.ident()?;
                    if self.peek() == Some(&Tok::Sym("(")) {
                        return Err(SyntaxError(format!(
                            "function {name}() in a selection is not supported by this test node"
                        )));
                    }
                    Selector::Column {
                        name,
                        alias: self.alias()?,
                    }
                };
                selectors.push(selector);
                if !self.eat_sym(",") {
                    break;
                }
            }
            Selection::Selectors(selectors)
        };
        self.kw("from")?;
        let table = self.qualified()?;
        let relations = self.where_clause()?;
        let mut order_by = Vec::new();
        if self.eat_kw("order") {
            self.kw("by")?;
            loop {
                let column = self.ident()?;
                let desc = if self.eat_kw("desc") {
                    true
                } else {
                    self.eat_kw("asc");
                    false
                };
                order_by.push((column, desc));
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        if self.peek_kw("per") {
            return Err(SyntaxError(
                "PER PARTITION LIMIT is not supported by this test node".into(),
            ));
        }
        let limit = if self.eat_kw("limit") {
            Some(self.term(Marker::Limit)?)
        } else {
            None
        };
        let allow_filtering = if self.eat_kw("allow") {
            self.kw("filtering")?;
            true
        } else {
            false
        };
        Ok(Statement::Select {
            table,
            selection,
            relations,
            order_by,
            limit,
            allow_filtering,
        })
    }

    fn alias(&mut self) -> Result<Option<String>, SyntaxError> {
        if self.eat_kw("as") {
            Ok(Some(self.ident()?))
        } else {
            Ok(None)
        }
    }

    fn batch(&mut self) -> Result<Statement, SyntaxError> {
        self.kw("begin")?;
        let kind = if self.eat_kw("unlogged") {
            BatchKind::Unlogged
        } else if self.eat_kw("counter") {
            BatchKind::Counter
        } else {
            BatchKind::Logged
        };
        self.kw("batch")?;
        let mut ignored = Using::default();
        self.using(&mut ignored)?;
        let mut statements = Vec::new();
        loop {
            if self.peek_kw("apply") {
                self.pos += 1;
                self.kw("batch")?;
                return Ok(Statement::Batch { kind, statements });
            }
            let statement = match self.peek() {
                Some(Tok::Ident(w)) if w == "insert" => self.insert()?,
                Some(Tok::Ident(w)) if w == "update" => self.update()?,
                Some(Tok::Ident(w)) if w == "delete" => self.delete()?,
                _ => return Err(self.error("INSERT, UPDATE, DELETE or APPLY BATCH")),
            };
            statements.push(statement);
            self.eat_sym(";");
        }
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(w) => format!("'{w}'"),
        Tok::Quoted(w) => format!("\"{w}\""),
        Tok::Str(s) => format!("string '{s}'"),
        Tok::Num(n) => format!("number {n}"),
        Tok::Uuid(u) => format!("uuid {u}"),
        Tok::Hex(_) => "blob literal".into(),
        Tok::Sym(s) => format!("'{s}'"),
        Tok::Qmark => "'?'".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_create_table_with_composite_key_and_order() {
        let parsed = parse(
            "CREATE TABLE IF NOT EXISTS ks.t (a text, b int, c timestamp, v blob, \
             PRIMARY KEY ((a, b), c)) WITH CLUSTERING ORDER BY (c DESC) AND comment = 'x' \
             AND compaction = {'class': 'LeveledCompactionStrategy'};",
        )
        .map(|p| p.statement);
        let Ok(Statement::CreateTable {
            partition_key,
            clustering,
            descending,
            columns,
            ..
        }) = parsed
        else {
            panic!("unexpected {parsed:?}");
        };
        assert_eq!(partition_key, ["a", "b"]);
        assert_eq!(clustering, ["c"]);
        assert_eq!(descending, ["c"]);
        assert_eq!(columns.len(), 4);
    }

    #[test]
    fn records_marker_targets_in_order() {
        let parsed = parse(
            "SELECT * FROM t WHERE token(p) > ? AND c >= ? AND d IN ? LIMIT ? ALLOW FILTERING",
        );
        assert_eq!(
            parsed.map(|p| p.markers),
            Ok(vec![
                Marker::Token,
                Marker::Column("c".into()),
                Marker::InList("d".into()),
                Marker::Limit
            ])
        );
    }

    #[test]
    fn parses_counter_update_and_conditions() {
        let parsed = parse("UPDATE t SET c = c - ?, v = 'x' WHERE p = 5 IF v = ?");
        let Ok(Parsed {
            statement:
                Statement::Update {
                    assignments,
                    condition,
                    ..
                },
            ..
        }) = parsed
        else {
            panic!("unexpected {parsed:?}");
        };
        assert!(matches!(
            &assignments[0],
            Assignment::Counter { negate: true, .. }
        ));
        assert!(matches!(condition, Condition::Columns(ref c) if c.len() == 1));
    }

    #[test]
    fn lexes_uuids_that_start_with_letters() {
        let parsed = parse("SELECT * FROM t WHERE id = ab8e2dd4-6a8b-4a7f-9d4c-6f1f7f2b0c11");
        assert!(parsed.is_ok(), "{parsed:?}");
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("SELEKT 1").is_err());
        assert!(parse("SELECT * FROM").is_err());
    }
}
