//! Statement execution against the in-memory [`Database`]: binding values, `SELECT` with its
//! restriction rules and paging, writes (plain, counter, conditional), batches and DDL.
//!
//! Every statement runs under one lock on the database, so a write, a lightweight transaction
//! or a whole batch is atomic with respect to every other request; that is the only
//! "consistency" this node has, whatever consistency level the client asked for.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

use crate::cql::{
    Assignment, BatchKind, ColumnDef, Condition, Lhs, Literal, Marker, Op, Parsed, QualifiedName,
    Relation, Selection, Selector, Statement, Term,
};
use crate::db::{
    ClusteringKey, ColumnKind, Database, Keyspace, PartitionKey, Row, Table, TableSchema,
    is_system_keyspace,
};
use crate::error::DbError;
use crate::murmur3;
use crate::node::Tablets;
use crate::value::{CqlType, Value, compare};
use crate::wire::{RawValue, Reader, Writer};

/// A column specification in prepared or result metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct ColSpec {
    pub keyspace: String,
    pub table: String,
    pub name: String,
    pub ty: CqlType,
}

/// Result of a statement.
#[derive(Debug, Clone)]
pub enum Outcome {
    Void,
    Rows(Rows),
    SetKeyspace(String),
    SchemaChange(SchemaChange),
}

/// A page of rows.
#[derive(Debug, Clone)]
pub struct Rows {
    pub columns: Vec<ColSpec>,
    pub rows: Vec<Row>,
    /// Present when more pages follow.
    pub paging_state: Option<Vec<u8>>,
}

/// What a DDL statement changed: sent as the result and as an event to registered connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaChange {
    /// `CREATED`, `UPDATED` or `DROPPED`.
    pub change: &'static str,
    pub keyspace: String,
    /// `None` for a keyspace change.
    pub table: Option<String>,
}

/// Paging parameters of a `QUERY` or `EXECUTE`.
#[derive(Debug, Clone, Default)]
pub struct Paging {
    /// `None` (or a non-positive size on the wire): everything in one page.
    pub page_size: Option<usize>,
    pub state: Option<Vec<u8>>,
}

/// What `PREPARE` answers.
#[derive(Debug, Clone)]
pub struct PreparedMeta {
    pub id: Vec<u8>,
    pub binds: Vec<ColSpec>,
    /// For each partition key column, the index of the bind marker giving its value (empty
    /// unless every partition key column is bound by a marker): drives token-aware routing.
    pub pk_indexes: Vec<u16>,
    pub result: Vec<ColSpec>,
}

/// A prepared statement kept by the node (node-wide, as in Cassandra).
#[derive(Debug)]
pub struct PreparedEntry {
    pub query: String,
    /// The keyspace in force when it was prepared: unqualified names resolve against it.
    pub keyspace: Option<String>,
    pub parsed: Arc<Parsed>,
}

/// One statement of a `BATCH` request.
#[derive(Clone)]
pub struct BatchItem {
    pub parsed: Arc<Parsed>,
    pub keyspace: Option<String>,
    pub values: Vec<RawValue>,
}

/// The database and the prepared statement cache.
pub struct Engine {
    db: Mutex<Database>,
    prepared: Mutex<HashMap<Vec<u8>, Arc<PreparedEntry>>>,
}

/// A bound value after decoding.
#[derive(Debug, Clone, PartialEq)]
enum Bind {
    Null,
    Unset,
    Val(Value),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the maps half-updated in a way that matters
    // to a test node, so a poisoned lock is simply taken over.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The prepared statement id: a hash of the keyspace and the text, so that re-preparing the same
/// statement yields the same id (the driver checks that after an `UNPREPARED` error).
pub fn prepared_id(keyspace: Option<&str>, query: &str) -> Vec<u8> {
    let mut input = keyspace.unwrap_or("").as_bytes().to_vec();
    input.push(0);
    input.extend_from_slice(query.as_bytes());
    let (h1, h2) = murmur3::hash128(&input);
    let mut id = h1.to_be_bytes().to_vec();
    id.extend_from_slice(&h2.to_be_bytes());
    id
}

enum TableRef<'a> {
    Stored(&'a Table),
    Virtual(Table),
}

impl Deref for TableRef<'_> {
    type Target = Table;
    fn deref(&self) -> &Table {
        match self {
            TableRef::Stored(t) => t,
            TableRef::Virtual(t) => t,
        }
    }
}

fn resolve(name: &QualifiedName, session: Option<&str>) -> Result<(String, String), DbError> {
    let keyspace = match (&name.keyspace, session) {
        (Some(ks), _) => ks.clone(),
        (None, Some(ks)) => ks.to_string(),
        (None, None) => {
            return Err(DbError::invalid(
                "No keyspace has been specified. USE a keyspace, or explicitly specify keyspace.tablename",
            ));
        }
    };
    Ok((keyspace, name.name.clone()))
}

fn table<'a>(db: &'a Database, keyspace: &str, name: &str) -> Result<TableRef<'a>, DbError> {
    if is_system_keyspace(keyspace) {
        return db
            .system_table(keyspace, name)
            .map(TableRef::Virtual)
            .ok_or_else(|| DbError::invalid(format!("unconfigured table {name}")));
    }
    let ks = db
        .keyspaces
        .get(keyspace)
        .ok_or_else(|| DbError::invalid(format!("Keyspace {keyspace} does not exist")))?;
    ks.tables
        .get(name)
        .map(TableRef::Stored)
        .ok_or_else(|| DbError::invalid(format!("unconfigured table {name}")))
}

fn table_mut<'a>(
    db: &'a mut Database,
    keyspace: &str,
    name: &str,
) -> Result<&'a mut Table, DbError> {
    if is_system_keyspace(keyspace) {
        return Err(DbError::invalid(format!(
            "{keyspace} keyspace is not user-modifiable"
        )));
    }
    db.keyspaces
        .get_mut(keyspace)
        .ok_or_else(|| DbError::invalid(format!("Keyspace {keyspace} does not exist")))?
        .tables
        .get_mut(name)
        .ok_or_else(|| DbError::invalid(format!("unconfigured table {name}")))
}

fn column(schema: &TableSchema, name: &str) -> Result<usize, DbError> {
    schema
        .column(name)
        .ok_or_else(|| DbError::invalid(format!("Undefined column name {name}")))
}

fn spec(schema: &TableSchema, name: &str, ty: CqlType) -> ColSpec {
    ColSpec {
        keyspace: schema.keyspace.clone(),
        table: schema.name.clone(),
        name: name.to_string(),
        ty,
    }
}

/// The metadata of every bind marker of a statement on `schema`.
fn marker_specs(parsed: &Parsed, schema: Option<&TableSchema>) -> Result<Vec<ColSpec>, DbError> {
    if parsed.markers.is_empty() {
        return Ok(Vec::new());
    }
    let Some(schema) = schema else {
        return Err(DbError::invalid(
            "bind markers are only supported in INSERT, UPDATE, DELETE and SELECT (use a BATCH request, not BEGIN BATCH text, to bind values in batches)",
        ));
    };
    parsed
        .markers
        .iter()
        .map(|m| {
            Ok(match m {
                Marker::Column(c) => {
                    let idx = column(schema, c)?;
                    spec(schema, c, schema.columns[idx].ty.clone())
                }
                Marker::InList(c) => {
                    let idx = column(schema, c)?;
                    spec(
                        schema,
                        &format!("in({c})"),
                        CqlType::List(Box::new(schema.columns[idx].ty.clone())),
                    )
                }
                Marker::Token => spec(schema, "partition key token", CqlType::BigInt),
                Marker::Limit => spec(schema, "[limit]", CqlType::Int),
                Marker::Ttl => spec(schema, "[ttl]", CqlType::Int),
                Marker::Timestamp => spec(schema, "[timestamp]", CqlType::BigInt),
            })
        })
        .collect()
}

fn bind_values(specs: &[ColSpec], values: &[RawValue]) -> Result<Vec<Bind>, DbError> {
    if specs.len() != values.len() {
        return Err(DbError::invalid(format!(
            "There were {} markers(?) in CQL but {} bound variables",
            specs.len(),
            values.len()
        )));
    }
    specs
        .iter()
        .zip(values)
        .map(|(spec, raw)| match raw {
            RawValue::Null => Ok(Bind::Null),
            RawValue::Unset => Ok(Bind::Unset),
            RawValue::Bytes(b) => spec.ty.decode(b).map(Bind::Val).map_err(|e| {
                DbError::invalid(format!(
                    "Invalid value for {} ({}): {e}",
                    spec.name, spec.ty
                ))
            }),
        })
        .collect()
}

fn coerce(lit: &Literal, ty: &CqlType) -> Result<Bind, DbError> {
    let bad = || DbError::invalid(format!("Invalid literal {lit:?} for type {ty}"));
    let num = |n: &str| -> Result<i64, DbError> { n.parse::<i64>().map_err(|_| bad()) };
    Ok(Bind::Val(match (lit, ty) {
        (Literal::Null, _) => return Ok(Bind::Null),
        (Literal::Str(s), CqlType::Text | CqlType::Ascii) => Value::Text(s.clone()),
        (Literal::Str(s), CqlType::Uuid) => Value::Uuid(Uuid::parse_str(s).map_err(|_| bad())?),
        (Literal::Str(s), CqlType::TimeUuid) => {
            Value::TimeUuid(Uuid::parse_str(s).map_err(|_| bad())?)
        }
        (Literal::Str(s), CqlType::Inet) => Value::Inet(s.parse().map_err(|_| bad())?),
        (Literal::Uuid(u), CqlType::Uuid) => Value::Uuid(*u),
        (Literal::Uuid(u), CqlType::TimeUuid) => Value::TimeUuid(*u),
        (Literal::Bool(b), CqlType::Boolean) => Value::Boolean(*b),
        (Literal::Blob(b), CqlType::Blob) => Value::Blob(b.clone()),
        (Literal::Num(n), CqlType::Int) => Value::Int(i32::try_from(num(n)?).map_err(|_| bad())?),
        (Literal::Num(n), CqlType::SmallInt) => {
            Value::SmallInt(i16::try_from(num(n)?).map_err(|_| bad())?)
        }
        (Literal::Num(n), CqlType::TinyInt) => {
            Value::TinyInt(i8::try_from(num(n)?).map_err(|_| bad())?)
        }
        (Literal::Num(n), CqlType::BigInt) => Value::BigInt(num(n)?),
        (Literal::Num(n), CqlType::Counter) => Value::Counter(num(n)?),
        (Literal::Num(n), CqlType::Timestamp) => Value::Timestamp(num(n)?),
        (Literal::Num(n), CqlType::Date) => Value::Date(u32::try_from(num(n)?).map_err(|_| bad())?),
        (Literal::Num(n), CqlType::Double) => Value::Double(n.parse().map_err(|_| bad())?),
        _ => return Err(bad()),
    }))
}

fn eval(term: &Term, binds: &[Bind], ty: &CqlType) -> Result<Bind, DbError> {
    match term {
        Term::Bind(i) => binds
            .get(*i)
            .cloned()
            .ok_or_else(|| DbError::Protocol(format!("missing value for bind marker {i}"))),
        Term::Lit(lit) => coerce(lit, ty),
    }
}

/// A value that must be present: restrictions and key columns reject null and unset.
fn eval_required(
    term: &Term,
    binds: &[Bind],
    ty: &CqlType,
    column: &str,
) -> Result<Value, DbError> {
    match eval(term, binds, ty)? {
        Bind::Val(v) => Ok(v),
        Bind::Null => Err(DbError::invalid(format!(
            "Invalid null value in condition for column {column}"
        ))),
        Bind::Unset => Err(DbError::invalid(format!(
            "Invalid unset value for column {column}"
        ))),
    }
}

/// A row-level predicate.
#[derive(Debug, Clone)]
enum Pred {
    Cmp(Op, Value),
    In(Vec<Value>),
}

impl Pred {
    fn matches(&self, cell: Option<&Value>) -> bool {
        let Some(cell) = cell else { return false };
        match self {
            Pred::Cmp(op, v) => {
                let o = compare(cell, v);
                match op {
                    Op::Eq => o.is_eq(),
                    Op::Lt => o.is_lt(),
                    Op::Le => o.is_le(),
                    Op::Gt => o.is_gt(),
                    Op::Ge => o.is_ge(),
                }
            }
            Pred::In(vs) => vs.iter().any(|v| compare(cell, v).is_eq()),
        }
    }

    fn is_eq(&self) -> bool {
        matches!(self, Pred::Cmp(Op::Eq, _) | Pred::In(_))
    }
}

const FILTERING_MESSAGE: &str = "Cannot execute this query as it might involve data filtering and thus may have unpredictable performance. If you want to execute this query despite the performance unpredictability, use ALLOW FILTERING";

/// The restrictions of a `SELECT`, sorted by what they restrict.
struct Restrictions {
    /// Per partition key column: the allowed values (`=` or `IN`).
    pk_values: Vec<Option<Vec<Value>>>,
    token_low: Option<(i64, bool)>,
    token_high: Option<(i64, bool)>,
    /// `(column index, predicate)` for every other restricted column.
    row_preds: Vec<(usize, Pred)>,
    needs_filtering: bool,
}

fn restrictions(
    schema: &TableSchema,
    relations: &[Relation],
    binds: &[Bind],
) -> Result<Restrictions, DbError> {
    let mut pk_values: Vec<Option<Vec<Value>>> = vec![None; schema.partition_key.len()];
    let mut token_low = None;
    let mut token_high = None;
    let mut ck_preds: Vec<(usize, Pred)> = Vec::new();
    let mut regular: Vec<(usize, Pred)> = Vec::new();
    for rel in relations {
        let (column_name, pred) = match rel {
            Relation::Compare {
                lhs: Lhs::Token(columns),
                op,
                rhs,
            } => {
                let pk_names: Vec<&str> = schema
                    .partition_key
                    .iter()
                    .map(|&i| schema.columns[i].name.as_str())
                    .collect();
                if columns
                    .iter()
                    .map(String::as_str)
                    .ne(pk_names.iter().copied())
                {
                    return Err(DbError::invalid(format!(
                        "The token function arguments must be in the partition key order: {}",
                        pk_names.join(", ")
                    )));
                }
                let v = eval_required(rhs, binds, &CqlType::BigInt, "partition key token")?;
                let t = v
                    .as_i64()
                    .ok_or_else(|| DbError::invalid("token bounds must be bigint"))?;
                match op {
                    Op::Gt => token_low = Some((t, false)),
                    Op::Ge => token_low = Some((t, true)),
                    Op::Lt => token_high = Some((t, false)),
                    Op::Le => token_high = Some((t, true)),
                    Op::Eq => {
                        token_low = Some((t, true));
                        token_high = Some((t, true));
                    }
                }
                continue;
            }
            Relation::Compare {
                lhs: Lhs::Column(c),
                op,
                rhs,
            } => {
                let idx = column(schema, c)?;
                let v = eval_required(rhs, binds, &schema.columns[idx].ty, c)?;
                (c, Pred::Cmp(*op, v))
            }
            Relation::InTerms { column: c, terms } => {
                let idx = column(schema, c)?;
                let vs = terms
                    .iter()
                    .map(|t| eval_required(t, binds, &schema.columns[idx].ty, c))
                    .collect::<Result<Vec<_>, _>>()?;
                (c, Pred::In(vs))
            }
            Relation::InMarker { column: c, marker } => {
                let idx = column(schema, c)?;
                let ty = CqlType::List(Box::new(schema.columns[idx].ty.clone()));
                match eval_required(marker, binds, &ty, c)? {
                    Value::List(vs) | Value::Set(vs) => (c, Pred::In(vs)),
                    _ => return Err(DbError::invalid(format!("IN value for {c} must be a list"))),
                }
            }
        };
        let idx = column(schema, column_name)?;
        match schema.kind(idx) {
            ColumnKind::PartitionKey => {
                let pos = schema
                    .partition_key
                    .iter()
                    .position(|&k| k == idx)
                    .unwrap_or(0);
                let values = match pred {
                    Pred::Cmp(Op::Eq, v) => vec![v],
                    Pred::In(vs) => vs,
                    Pred::Cmp(..) => {
                        return Err(DbError::invalid(
                            "Only EQ and IN relation are supported on the partition key (unless you use the token() function)",
                        ));
                    }
                };
                if pk_values[pos].is_some() {
                    return Err(DbError::invalid(format!(
                        "{column_name} cannot be restricted by more than one relation if it includes an Equal"
                    )));
                }
                pk_values[pos] = Some(values);
            }
            ColumnKind::Clustering => ck_preds.push((idx, pred)),
            ColumnKind::Regular => regular.push((idx, pred)),
        }
    }
    let pk_full = pk_values.iter().all(Option::is_some);
    let pk_partial = !pk_full && pk_values.iter().any(Option::is_some);
    // Clustering restrictions select a contiguous slice only as equalities on a prefix,
    // then at most a range on the next column.
    let mut ck_slice = true;
    let mut ended = false;
    for &col in &schema.clustering {
        let preds: Vec<&Pred> = ck_preds
            .iter()
            .filter(|(i, _)| *i == col)
            .map(|(_, p)| p)
            .collect();
        if preds.is_empty() {
            ended = true;
        } else if ended {
            ck_slice = false;
        } else if !preds.iter().all(|p| p.is_eq()) {
            ended = true;
        }
    }
    let needs_filtering =
        !regular.is_empty() || pk_partial || !ck_slice || (!ck_preds.is_empty() && !pk_full);
    let mut row_preds = ck_preds;
    row_preds.extend(regular);
    if pk_partial {
        for (pos, values) in pk_values.iter().enumerate() {
            if let Some(values) = values {
                row_preds.push((schema.partition_key[pos], Pred::In(values.clone())));
            }
        }
    }
    Ok(Restrictions {
        pk_values: if pk_full { pk_values } else { vec![] },
        token_low,
        token_high,
        row_preds,
        needs_filtering,
    })
}

fn token_in(token: i64, low: Option<(i64, bool)>, high: Option<(i64, bool)>) -> bool {
    let above = match low {
        Some((t, true)) => token >= t,
        Some((t, false)) => token > t,
        None => true,
    };
    let below = match high {
        Some((t, true)) => token <= t,
        Some((t, false)) => token < t,
        None => true,
    };
    above && below
}

/// Cartesian product of the allowed values of each partition key column.
fn product(columns: &[Option<Vec<Value>>]) -> Vec<Vec<Value>> {
    let mut out: Vec<Vec<Value>> = vec![vec![]];
    for values in columns.iter().flatten() {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                values.iter().map(move |v| {
                    let mut next = prefix.clone();
                    next.push(v.clone());
                    next
                })
            })
            .collect();
    }
    out
}

/// What a `SELECT` returns per row.
enum Projection {
    Columns(Vec<usize>, Vec<ColSpec>),
    Count(ColSpec),
}

fn projection(schema: &TableSchema, selection: &Selection) -> Result<Projection, DbError> {
    match selection {
        Selection::All => Ok(Projection::Columns(
            (0..schema.columns.len()).collect(),
            schema
                .columns
                .iter()
                .map(|c| spec(schema, &c.name, c.ty.clone()))
                .collect(),
        )),
        Selection::Selectors(selectors) => {
            if let [Selector::CountAll { alias }] = selectors.as_slice() {
                let name = alias.clone().unwrap_or_else(|| "count".to_string());
                return Ok(Projection::Count(spec(schema, &name, CqlType::BigInt)));
            }
            let mut indexes = Vec::new();
            let mut specs = Vec::new();
            for s in selectors {
                match s {
                    Selector::Column { name, alias } => {
                        let idx = column(schema, name)?;
                        indexes.push(idx);
                        let shown = alias.as_deref().unwrap_or(name);
                        specs.push(spec(schema, shown, schema.columns[idx].ty.clone()));
                    }
                    Selector::CountAll { .. } => {
                        return Err(DbError::invalid(
                            "COUNT(*) can only be selected alone by this test node",
                        ));
                    }
                }
            }
            Ok(Projection::Columns(indexes, specs))
        }
    }
}

/// The paging state: rows returned so far (for `LIMIT`) and the position of the last one.
fn encode_paging_state(returned: usize, pk: &PartitionKey, ck: &ClusteringKey) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(1);
    w.i64(i64::try_from(returned).unwrap_or(i64::MAX));
    w.i64(pk.token);
    w.bytes(Some(&pk.bytes));
    w.u16(u16::try_from(ck.0.len()).unwrap_or(u16::MAX));
    for part in &ck.0 {
        w.bytes(Some(&part.value.encode()));
    }
    w.buf
}

fn decode_paging_state(
    schema: &TableSchema,
    state: &[u8],
) -> Result<(usize, PartitionKey, ClusteringKey), DbError> {
    let bad = || DbError::Protocol("invalid paging state".into());
    let mut r = Reader::new(state);
    if r.u8().map_err(|_| bad())? != 1 {
        return Err(bad());
    }
    let returned = usize::try_from(r.i64().map_err(|_| bad())?).map_err(|_| bad())?;
    let token = r.i64().map_err(|_| bad())?;
    let bytes = r.bytes().map_err(|_| bad())?.ok_or_else(bad)?;
    let n = usize::from(r.u16().map_err(|_| bad())?);
    if n != schema.clustering.len() {
        return Err(bad());
    }
    let mut values = Vec::with_capacity(n);
    for &col in &schema.clustering {
        let b = r.bytes().map_err(|_| bad())?.ok_or_else(bad)?;
        values.push(schema.columns[col].ty.decode(&b).map_err(|_| bad())?);
    }
    Ok((
        returned,
        PartitionKey { token, bytes },
        schema.clustering_key_of(&values),
    ))
}

fn select(
    table: &Table,
    statement: &Statement,
    binds: &[Bind],
    paging: &Paging,
) -> Result<Rows, DbError> {
    let Statement::Select {
        selection,
        relations,
        order_by,
        limit,
        allow_filtering,
        ..
    } = statement
    else {
        return Err(DbError::Server("not a SELECT".into()));
    };
    let schema = &table.schema;
    let r = restrictions(schema, relations, binds)?;
    if r.needs_filtering && !allow_filtering {
        return Err(DbError::invalid(FILTERING_MESSAGE));
    }
    let pk_restricted = !r.pk_values.is_empty();
    let mut reversed = false;
    for (i, (name, desc)) in order_by.iter().enumerate() {
        if !pk_restricted {
            return Err(DbError::invalid(
                "ORDER BY is only supported when the partition key is restricted by an EQ or an IN.",
            ));
        }
        let idx = column(schema, name)?;
        if schema.clustering.get(i) != Some(&idx) {
            return Err(DbError::invalid(format!(
                "Order by currently only supports the ordering of columns following their declared order in the PRIMARY KEY (got {name})"
            )));
        }
        let flip = *desc != schema.descending[i];
        if i == 0 {
            reversed = flip;
        } else if flip != reversed {
            return Err(DbError::invalid("Unsupported order by relation"));
        }
    }
    let limit = match limit {
        Some(term) => {
            let v = eval_required(term, binds, &CqlType::Int, "[limit]")?;
            match v.as_i64() {
                Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
                _ => return Err(DbError::invalid("LIMIT must be strictly positive")),
            }
        }
        None => usize::MAX,
    };
    let projection = projection(schema, selection)?;

    let partitions: Vec<(&PartitionKey, &crate::db::Partition)> = if pk_restricted {
        let mut keys: Vec<PartitionKey> = product(&r.pk_values)
            .iter()
            .map(|vs| schema.partition_key_of(vs))
            .collect();
        keys.sort();
        keys.dedup();
        keys.iter()
            .filter_map(|k| table.partitions.get_key_value(k))
            .collect()
    } else {
        table.partitions.iter().collect()
    };
    let mut matched: Vec<(&PartitionKey, &ClusteringKey, &Row)> = Vec::new();
    for (pk, partition) in partitions {
        if !token_in(pk.token, r.token_low, r.token_high) {
            continue;
        }
        let rows: Box<dyn Iterator<Item = (&ClusteringKey, &Row)>> = if reversed {
            Box::new(partition.rows.iter().rev())
        } else {
            Box::new(partition.rows.iter())
        };
        for (ck, row) in rows {
            if r.row_preds
                .iter()
                .all(|(idx, pred)| pred.matches(row[*idx].as_ref()))
            {
                matched.push((pk, ck, row));
            }
        }
    }

    let (indexes, columns) = match projection {
        Projection::Count(spec) => {
            let n = matched.len().min(limit);
            return Ok(Rows {
                columns: vec![spec],
                rows: vec![vec![Some(Value::BigInt(
                    i64::try_from(n).unwrap_or(i64::MAX),
                ))]],
                paging_state: None,
            });
        }
        Projection::Columns(indexes, columns) => (indexes, columns),
    };

    let (returned, start) = match &paging.state {
        None => (0, 0),
        Some(state) => {
            let (returned, last_pk, last_ck) = decode_paging_state(schema, state)?;
            let start = matched
                .iter()
                .position(|(pk, ck, _)| match (*pk).cmp(&last_pk) {
                    std::cmp::Ordering::Greater => true,
                    std::cmp::Ordering::Less => false,
                    std::cmp::Ordering::Equal => {
                        let o = (*ck).cmp(&last_ck);
                        if reversed { o.is_lt() } else { o.is_gt() }
                    }
                })
                .unwrap_or(matched.len());
            (returned, start)
        }
    };
    let remaining_limit = limit.saturating_sub(returned);
    let page_size = paging.page_size.unwrap_or(usize::MAX);
    let take = page_size.min(remaining_limit).min(matched.len() - start);
    let page = &matched[start..start + take];
    let more = start + take < matched.len() && returned + take < limit;
    let paging_state = match (more, page.last()) {
        (true, Some((pk, ck, _))) => Some(encode_paging_state(returned + take, pk, ck)),
        _ => None,
    };
    let rows = page
        .iter()
        .map(|(_, _, row)| indexes.iter().map(|&i| row[i].clone()).collect())
        .collect();
    Ok(Rows {
        columns,
        rows,
        paging_state,
    })
}

/// Which rows a write touches.
#[derive(Debug, Clone)]
enum Target {
    Row(ClusteringKey, Vec<Value>),
    /// Rows whose clustering key starts with these values (empty: the whole partition).
    Prefix(Vec<Value>),
}

#[derive(Debug, Clone)]
enum Action {
    /// Cells to set (`None` deletes the cell); creates the row if needed.
    Upsert(Vec<(usize, Option<Value>)>),
    Counter(Vec<(usize, i64)>),
    DeleteRows,
    DeleteCells(Vec<usize>),
}

/// A validated write, ready to be applied without further failure.
#[derive(Debug, Clone)]
struct WritePlan {
    keyspace: String,
    table: String,
    pk: PartitionKey,
    pk_values: Vec<Value>,
    target: Target,
    action: Action,
    condition: CondPlan,
    schema: Arc<TableSchema>,
}

#[derive(Debug, Clone)]
enum CondPlan {
    None,
    IfNotExists,
    IfExists,
    Columns(Vec<(usize, Option<Value>)>),
}

/// Key values of an `UPDATE`/`DELETE` from its `WHERE` equalities.
fn write_keys(
    schema: &TableSchema,
    relations: &[Relation],
    binds: &[Bind],
    full_clustering: bool,
) -> Result<(Vec<Value>, Vec<Value>, bool), DbError> {
    let mut values: HashMap<usize, Value> = HashMap::new();
    for rel in relations {
        let Relation::Compare {
            lhs: Lhs::Column(c),
            op: Op::Eq,
            rhs,
        } = rel
        else {
            return Err(DbError::invalid(
                "only equality relations on primary key columns are supported in UPDATE and DELETE by this test node",
            ));
        };
        let idx = column(schema, c)?;
        if schema.kind(idx) == ColumnKind::Regular {
            return Err(DbError::invalid(format!(
                "Non PRIMARY KEY columns found in where clause: {c}"
            )));
        }
        values.insert(idx, eval_required(rhs, binds, &schema.columns[idx].ty, c)?);
    }
    let mut pk = Vec::new();
    for &i in &schema.partition_key {
        match values.get(&i) {
            Some(v) => pk.push(v.clone()),
            None => {
                return Err(DbError::invalid(format!(
                    "Some partition key parts are missing: {}",
                    schema.columns[i].name
                )));
            }
        }
    }
    let mut ck = Vec::new();
    let mut missing: Option<usize> = None;
    for &i in &schema.clustering {
        match (values.get(&i), missing) {
            (Some(_), Some(m)) => {
                return Err(DbError::invalid(format!(
                    "PRIMARY KEY column \"{}\" cannot be restricted as preceding column \"{}\" is not restricted",
                    schema.columns[i].name, schema.columns[m].name
                )));
            }
            (Some(v), None) => ck.push(v.clone()),
            (None, _) => missing = missing.or(Some(i)),
        }
    }
    if let (Some(m), true) = (missing, full_clustering) {
        return Err(DbError::invalid(format!(
            "Some clustering keys are missing: {}",
            schema.columns[m].name
        )));
    }
    Ok((pk, ck, missing.is_none()))
}

fn plan_condition(
    schema: &TableSchema,
    condition: &Condition,
    binds: &[Bind],
) -> Result<CondPlan, DbError> {
    if condition.is_some() && schema.is_counter {
        return Err(DbError::invalid(
            "Conditional updates are not supported on counter tables",
        ));
    }
    Ok(match condition {
        Condition::None => CondPlan::None,
        Condition::IfExists => CondPlan::IfExists,
        Condition::Columns(items) => {
            let mut out = Vec::new();
            for (c, term) in items {
                let idx = column(schema, c)?;
                if schema.kind(idx) != ColumnKind::Regular {
                    return Err(DbError::invalid(format!(
                        "PRIMARY KEY column '{c}' cannot have IF conditions"
                    )));
                }
                let value = match eval(term, binds, &schema.columns[idx].ty)? {
                    Bind::Val(v) => Some(v),
                    Bind::Null => None,
                    Bind::Unset => {
                        return Err(DbError::invalid(format!(
                            "Invalid unset value for column {c}"
                        )));
                    }
                };
                out.push((idx, value));
            }
            CondPlan::Columns(out)
        }
    })
}

fn plan_write(
    db: &Database,
    statement: &Statement,
    session: Option<&str>,
    binds: &[Bind],
) -> Result<WritePlan, DbError> {
    let name = statement
        .table()
        .ok_or_else(|| DbError::invalid("not a write"))?;
    let (keyspace, table_name) = resolve(name, session)?;
    let table = table(db, &keyspace, &table_name)?;
    if is_system_keyspace(&keyspace) {
        return Err(DbError::invalid(format!(
            "{keyspace} keyspace is not user-modifiable"
        )));
    }
    let schema = Arc::clone(&table.schema);
    let (pk_values, target, action, condition) = match statement {
        Statement::Insert {
            columns,
            values,
            if_not_exists,
            ..
        } => {
            if schema.is_counter {
                return Err(DbError::invalid(
                    "INSERT statements are not allowed on counter tables, use UPDATE instead",
                ));
            }
            let mut cells: HashMap<usize, Bind> = HashMap::new();
            for (c, term) in columns.iter().zip(values) {
                let idx = column(&schema, c)?;
                if cells
                    .insert(idx, eval(term, binds, &schema.columns[idx].ty)?)
                    .is_some()
                {
                    return Err(DbError::invalid(format!(
                        "Multiple definitions found for column {c}"
                    )));
                }
            }
            let key = |cols: &[usize], what: &str| -> Result<Vec<Value>, DbError> {
                cols.iter()
                    .map(|i| match cells.get(i) {
                        Some(Bind::Val(v)) => Ok(v.clone()),
                        Some(_) => Err(DbError::invalid(format!(
                            "Invalid null value in condition for column {}",
                            schema.columns[*i].name
                        ))),
                        None => Err(DbError::invalid(format!(
                            "Some {what} are missing: {}",
                            schema.columns[*i].name
                        ))),
                    })
                    .collect()
            };
            let pk = key(&schema.partition_key, "partition key parts")?;
            let ck = key(&schema.clustering, "clustering keys")?;
            let mut set = Vec::new();
            for (idx, bind) in &cells {
                if schema.kind(*idx) != ColumnKind::Regular {
                    continue;
                }
                match bind {
                    Bind::Val(v) => set.push((*idx, Some(v.clone()))),
                    Bind::Null => set.push((*idx, None)),
                    Bind::Unset => {}
                }
            }
            set.sort_by_key(|(i, _)| *i);
            let condition = if *if_not_exists {
                CondPlan::IfNotExists
            } else {
                CondPlan::None
            };
            (
                pk,
                Target::Row(schema.clustering_key_of(&ck), ck),
                Action::Upsert(set),
                condition,
            )
        }
        Statement::Update {
            assignments,
            relations,
            condition,
            ..
        } => {
            let (pk, ck, _) = write_keys(&schema, relations, binds, true)?;
            let mut set = Vec::new();
            let mut deltas = Vec::new();
            for a in assignments {
                match a {
                    Assignment::Set { column: c, value } => {
                        let idx = column(&schema, c)?;
                        if schema.kind(idx) != ColumnKind::Regular {
                            return Err(DbError::invalid(format!(
                                "PRIMARY KEY part {c} found in SET part"
                            )));
                        }
                        if schema.columns[idx].ty == CqlType::Counter {
                            return Err(DbError::invalid(format!(
                                "Cannot set the value of counter column {c} (counters can only be incremented/decremented, not set)"
                            )));
                        }
                        match eval(value, binds, &schema.columns[idx].ty)? {
                            Bind::Val(v) => set.push((idx, Some(v))),
                            Bind::Null => set.push((idx, None)),
                            Bind::Unset => {}
                        }
                    }
                    Assignment::Counter {
                        column: c,
                        delta,
                        negate,
                    } => {
                        let idx = column(&schema, c)?;
                        if schema.columns[idx].ty != CqlType::Counter {
                            return Err(DbError::invalid(format!(
                                "Invalid operation ({c} = {c} + ?) for non counter column {c}"
                            )));
                        }
                        match eval(delta, binds, &CqlType::Counter)? {
                            Bind::Val(v) => {
                                let d = v.as_i64().unwrap_or(0);
                                deltas.push((idx, if *negate { d.wrapping_neg() } else { d }));
                            }
                            Bind::Null => {
                                return Err(DbError::invalid(
                                    "Invalid null value for counter increment",
                                ));
                            }
                            Bind::Unset => {}
                        }
                    }
                }
            }
            if !set.is_empty() && !deltas.is_empty() {
                return Err(DbError::invalid(
                    "Cannot mix counter and non counter updates",
                ));
            }
            let action = if deltas.is_empty() {
                Action::Upsert(set)
            } else {
                Action::Counter(deltas)
            };
            let condition = plan_condition(&schema, condition, binds)?;
            (
                pk,
                Target::Row(schema.clustering_key_of(&ck), ck),
                action,
                condition,
            )
        }
        Statement::Delete {
            columns,
            relations,
            condition,
            ..
        } => {
            let (pk, ck, full) = write_keys(&schema, relations, binds, false)?;
            let condition = plan_condition(&schema, condition, binds)?;
            if !full && !matches!(condition, CondPlan::None) {
                return Err(DbError::invalid(
                    "DELETE statements must restrict all PRIMARY KEY columns with equality relations in order to use IF conditions",
                ));
            }
            let target = if full {
                Target::Row(schema.clustering_key_of(&ck), ck)
            } else {
                Target::Prefix(ck)
            };
            let action = if columns.is_empty() {
                Action::DeleteRows
            } else {
                if !full {
                    return Err(DbError::invalid(
                        "Deleting columns requires the full primary key",
                    ));
                }
                let mut idxs = Vec::new();
                for c in columns {
                    let idx = column(&schema, c)?;
                    if schema.kind(idx) != ColumnKind::Regular {
                        return Err(DbError::invalid(format!(
                            "Invalid identifier {c} for deletion (should not be a PRIMARY KEY part)"
                        )));
                    }
                    idxs.push(idx);
                }
                Action::DeleteCells(idxs)
            };
            (pk, target, action, condition)
        }
        _ => return Err(DbError::invalid("not a write")),
    };
    let pk = schema.partition_key_of(&pk_values);
    Ok(WritePlan {
        keyspace,
        table: table_name,
        pk,
        pk_values,
        target,
        action,
        condition,
        schema,
    })
}

fn prefix_matches(ck: &ClusteringKey, prefix: &[Value]) -> bool {
    ck.0.iter()
        .zip(prefix)
        .all(|(part, v)| compare(&part.value, v).is_eq())
}

fn apply(db: &mut Database, plan: &WritePlan) -> Result<(), DbError> {
    let table = table_mut(db, &plan.keyspace, &plan.table)?;
    let schema = Arc::clone(&table.schema);
    match (&plan.target, &plan.action) {
        (Target::Row(ck, ck_values), Action::Upsert(_) | Action::Counter(_)) => {
            let partition = table.partitions.entry(plan.pk.clone()).or_default();
            let row = partition.rows.entry(ck.clone()).or_insert_with(|| {
                let mut row: Row = vec![None; schema.columns.len()];
                for (&i, v) in schema.partition_key.iter().zip(&plan.pk_values) {
                    row[i] = Some(v.clone());
                }
                for (&i, v) in schema.clustering.iter().zip(ck_values) {
                    row[i] = Some(v.clone());
                }
                row
            });
            match &plan.action {
                Action::Upsert(cells) => {
                    for (i, v) in cells {
                        row[*i] = v.clone();
                    }
                }
                Action::Counter(deltas) => {
                    for (i, d) in deltas {
                        let old = row[*i].as_ref().and_then(Value::as_i64).unwrap_or(0);
                        row[*i] = Some(Value::Counter(old.wrapping_add(*d)));
                    }
                }
                _ => {}
            }
        }
        (Target::Row(ck, _), Action::DeleteRows) => {
            if let Some(p) = table.partitions.get_mut(&plan.pk) {
                p.rows.remove(ck);
            }
        }
        (Target::Row(ck, _), Action::DeleteCells(cols)) => {
            if let Some(row) = table
                .partitions
                .get_mut(&plan.pk)
                .and_then(|p| p.rows.get_mut(ck))
            {
                for i in cols {
                    row[*i] = None;
                }
            }
        }
        (Target::Prefix(prefix), _) => {
            if let Some(p) = table.partitions.get_mut(&plan.pk) {
                p.rows.retain(|ck, _| !prefix_matches(ck, prefix));
            }
        }
    }
    if table
        .partitions
        .get(&plan.pk)
        .is_some_and(|p| p.rows.is_empty())
    {
        table.partitions.remove(&plan.pk);
    }
    Ok(())
}

/// Runs a conditional write; the answer is the `[applied]` row Cassandra sends.
fn apply_conditional(db: &mut Database, plan: &WritePlan) -> Result<Rows, DbError> {
    let schema = Arc::clone(&plan.schema);
    let existing: Option<Row> = match &plan.target {
        Target::Row(ck, _) => table(db, &plan.keyspace, &plan.table)?
            .partitions
            .get(&plan.pk)
            .and_then(|p| p.rows.get(ck))
            .cloned(),
        Target::Prefix(_) => None,
    };
    let applied_spec = spec(&schema, "[applied]", CqlType::Boolean);
    let (applied, shown): (bool, Vec<usize>) = match &plan.condition {
        CondPlan::None => (true, vec![]),
        CondPlan::IfNotExists => (existing.is_none(), (0..schema.columns.len()).collect()),
        CondPlan::IfExists => (existing.is_some(), vec![]),
        CondPlan::Columns(conds) => {
            let ok = existing.as_ref().is_some_and(|row| {
                conds.iter().all(|(i, want)| match (&row[*i], want) {
                    (None, None) => true,
                    (Some(a), Some(b)) => compare(a, b).is_eq(),
                    _ => false,
                })
            });
            let mut cols: Vec<usize> = conds.iter().map(|(i, _)| *i).collect();
            cols.dedup();
            (ok, cols)
        }
    };
    if applied {
        apply(db, plan)?;
        return Ok(Rows {
            columns: vec![applied_spec],
            rows: vec![vec![Some(Value::Boolean(true))]],
            paging_state: None,
        });
    }
    let mut columns = vec![applied_spec];
    let mut row = vec![Some(Value::Boolean(false))];
    if let Some(existing) = &existing {
        for i in shown {
            columns.push(spec(
                &schema,
                &schema.columns[i].name,
                schema.columns[i].ty.clone(),
            ));
            row.push(existing[i].clone());
        }
    }
    Ok(Rows {
        columns,
        rows: vec![row],
        paging_state: None,
    })
}

fn schema_change(
    db: &mut Database,
    change: &'static str,
    keyspace: &str,
    table: Option<&str>,
) -> Outcome {
    db.schema_version = Uuid::new_v4();
    Outcome::SchemaChange(SchemaChange {
        change,
        keyspace: keyspace.to_string(),
        table: table.map(str::to_string),
    })
}

/// Whether a new keyspace uses tablets: ScyllaDB 6 gives them to every
/// `NetworkTopologyStrategy` keyspace not created with `tablets = {'enabled': false}`.
fn uses_tablets(
    support: Tablets,
    replication: &[(String, String)],
    options: Option<&[(String, String)]>,
) -> Result<bool, DbError> {
    if support == Tablets::Unknown {
        return match options {
            Some(_) => Err(DbError::Syntax("Unknown property 'tablets'".into())),
            None => Ok(false),
        };
    }
    let mut enabled = true;
    for (key, value) in options.unwrap_or_default() {
        match (key.as_str(), value.as_str()) {
            ("enabled", "true") => enabled = true,
            ("enabled", "false") => enabled = false,
            ("initial", n) if n.parse::<u32>().is_ok() => {}
            _ => {
                return Err(DbError::Config(format!(
                    "Invalid tablets option '{key}': '{value}'"
                )));
            }
        }
    }
    let topology = replication
        .iter()
        .any(|(k, v)| k == "class" && v.ends_with("NetworkTopologyStrategy"));
    if enabled && !topology && options.is_some() {
        return Err(DbError::Config(
            "Tablets are only supported with NetworkTopologyStrategy".into(),
        ));
    }
    Ok(enabled && topology)
}

fn normalize_replication(options: &[(String, String)]) -> Result<Vec<(String, String)>, DbError> {
    let mut out = Vec::new();
    let mut has_class = false;
    for (k, v) in options {
        if k == "class" {
            has_class = true;
            let class = if v.contains('.') {
                v.clone()
            } else {
                format!("org.apache.cassandra.locator.{v}")
            };
            out.push((k.clone(), class));
        } else {
            out.push((k.clone(), v.clone()));
        }
    }
    if !has_class {
        return Err(DbError::Server("Missing replication strategy class".into()));
    }
    Ok(out)
}

fn create_table(
    db: &mut Database,
    statement: &Statement,
    session: Option<&str>,
) -> Result<Outcome, DbError> {
    let Statement::CreateTable {
        table: name,
        if_not_exists,
        columns,
        partition_key,
        clustering,
        descending,
    } = statement
    else {
        return Err(DbError::Server("not a CREATE TABLE".into()));
    };
    let if_not_exists = *if_not_exists;
    let (keyspace, table_name) = resolve(name, session)?;
    let ks = db
        .keyspaces
        .get_mut(&keyspace)
        .ok_or_else(|| DbError::invalid(format!("Keyspace '{keyspace}' doesn't exist")))?;
    if ks.tables.contains_key(&table_name) {
        if if_not_exists {
            return Ok(Outcome::Void);
        }
        return Err(DbError::AlreadyExists {
            message: format!(
                "Cannot add already existing table \"{table_name}\" to keyspace \"{keyspace}\""
            ),
            keyspace,
            table: table_name,
        });
    }
    if partition_key.is_empty() {
        return Err(DbError::invalid(
            "No PRIMARY KEY specifed (exactly one required)",
        ));
    }
    let find = |n: &String| {
        columns
            .iter()
            .find(|c| &c.name == n)
            .cloned()
            .ok_or_else(|| {
                DbError::invalid(format!("Unknown definition {n} referenced in PRIMARY KEY"))
            })
    };
    for (i, c) in columns.iter().enumerate() {
        if columns[..i].iter().any(|d| d.name == c.name) {
            return Err(DbError::invalid(format!(
                "Multiple definition of identifier {}",
                c.name
            )));
        }
    }
    let mut ordered: Vec<ColumnDef> = Vec::new();
    for n in partition_key.iter().chain(clustering) {
        let c = find(n)?;
        if c.ty == CqlType::Counter {
            return Err(DbError::invalid(format!(
                "counter type is not supported for PRIMARY KEY part {n}"
            )));
        }
        if ordered.iter().any(|d| d.name == c.name) {
            return Err(DbError::invalid(format!(
                "Multiple definition of identifier {n} in PRIMARY KEY"
            )));
        }
        ordered.push(c);
    }
    let mut regular: Vec<ColumnDef> = columns
        .iter()
        .filter(|c| !ordered.iter().any(|d| d.name == c.name))
        .cloned()
        .collect();
    regular.sort_by(|a, b| a.name.cmp(&b.name));
    let counters = regular.iter().filter(|c| c.ty == CqlType::Counter).count();
    if counters > 0 && counters != regular.len() {
        return Err(DbError::invalid(
            "Cannot mix counter and non counter columns in the same table",
        ));
    }
    for d in descending {
        if !clustering.contains(d) {
            return Err(DbError::invalid(format!(
                "Only clustering key columns can be defined in CLUSTERING ORDER directive: {d}"
            )));
        }
    }
    let pk_len = partition_key.len();
    let ck_len = clustering.len();
    ordered.extend(regular);
    let schema = TableSchema {
        keyspace: keyspace.clone(),
        name: table_name.clone(),
        id: Uuid::new_v4(),
        columns: ordered,
        partition_key: (0..pk_len).collect(),
        clustering: (pk_len..pk_len + ck_len).collect(),
        descending: clustering.iter().map(|c| descending.contains(c)).collect(),
        is_counter: counters > 0,
    };
    ks.tables.insert(table_name.clone(), Table::new(schema));
    Ok(schema_change(db, "CREATED", &keyspace, Some(&table_name)))
}

fn is_write(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Insert { .. } | Statement::Update { .. } | Statement::Delete { .. }
    )
}

fn has_condition(statement: &Statement) -> bool {
    match statement {
        Statement::Insert { if_not_exists, .. } => *if_not_exists,
        Statement::Update { condition, .. } | Statement::Delete { condition, .. } => {
            condition.is_some()
        }
        _ => false,
    }
}

fn is_counter_write(plan: &WritePlan) -> bool {
    plan.schema.is_counter
}

impl Engine {
    pub fn new(db: Database) -> Engine {
        Engine {
            db: Mutex::new(db),
            prepared: Mutex::new(HashMap::new()),
        }
    }

    /// Direct access for the test-facing inspection helpers.
    pub fn with_db<R>(&self, f: impl FnOnce(&Database) -> R) -> R {
        f(&lock(&self.db))
    }

    pub fn prepared(&self, id: &[u8]) -> Option<Arc<PreparedEntry>> {
        lock(&self.prepared).get(id).cloned()
    }

    /// Forgets every prepared statement, so the next `EXECUTE`s get `UNPREPARED`.
    pub fn forget_prepared(&self) {
        lock(&self.prepared).clear();
    }

    /// The schema a statement's bind markers refer to (if any).
    fn statement_schema(
        &self,
        parsed: &Parsed,
        session: Option<&str>,
    ) -> Result<Option<Arc<TableSchema>>, DbError> {
        match &parsed.statement {
            s @ (Statement::Insert { .. }
            | Statement::Update { .. }
            | Statement::Delete { .. }
            | Statement::Select { .. }) => {
                let name = s
                    .table()
                    .ok_or_else(|| DbError::Server("statement without table".into()))?;
                let (ks, t) = resolve(name, session)?;
                let db = lock(&self.db);
                Ok(Some(Arc::clone(&table(&db, &ks, &t)?.schema)))
            }
            _ => Ok(None),
        }
    }

    pub fn prepare(&self, query: &str, session: Option<&str>) -> Result<PreparedMeta, DbError> {
        let parsed = crate::cql::parse(query)?;
        let schema = self.statement_schema(&parsed, session)?;
        let binds = marker_specs(&parsed, schema.as_deref())?;
        let mut pk_indexes = Vec::new();
        let mut result = Vec::new();
        if let Some(schema) = &schema {
            for &pk_col in &schema.partition_key {
                let name = &schema.columns[pk_col].name;
                match parsed
                    .markers
                    .iter()
                    .position(|m| matches!(m, Marker::Column(c) if c == name))
                {
                    Some(i) => pk_indexes.push(u16::try_from(i).unwrap_or(u16::MAX)),
                    None => {
                        pk_indexes.clear();
                        break;
                    }
                }
            }
            if let Statement::Select { selection, .. } = &parsed.statement {
                result = match projection(schema, selection)? {
                    Projection::Columns(_, specs) => specs,
                    Projection::Count(spec) => vec![spec],
                };
            }
        }
        // Unqualified names resolve against the keyspace at preparation, so that keyspace
        // is part of the statement's identity.
        let keyspace = session.map(str::to_string);
        let id = prepared_id(session, query);
        lock(&self.prepared).insert(
            id.clone(),
            Arc::new(PreparedEntry {
                query: query.to_string(),
                keyspace,
                parsed: Arc::new(parsed),
            }),
        );
        Ok(PreparedMeta {
            id,
            binds,
            pk_indexes,
            result,
        })
    }

    /// Runs one statement (from `QUERY` or `EXECUTE`).
    pub fn run(
        &self,
        parsed: &Parsed,
        session: Option<&str>,
        values: &[RawValue],
        paging: &Paging,
    ) -> Result<Outcome, DbError> {
        let schema = self.statement_schema(parsed, session)?;
        let specs = marker_specs(parsed, schema.as_deref())?;
        let binds = bind_values(&specs, values)?;
        let mut db = lock(&self.db);
        let db = &mut *db;
        match &parsed.statement {
            Statement::Select { table: name, .. } => {
                let (ks, t) = resolve(name, session)?;
                let table = table(db, &ks, &t)?;
                Ok(Outcome::Rows(select(
                    &table,
                    &parsed.statement,
                    &binds,
                    paging,
                )?))
            }
            s if is_write(s) => {
                let plan = plan_write(db, s, session, &binds)?;
                if has_condition(s) {
                    if db.keyspaces.get(&plan.keyspace).is_some_and(|k| k.tablets) {
                        return Err(DbError::invalid(format!(
                            "Cannot use LightWeight Transactions for table {}.{}: LWT is not yet supported with tablets",
                            plan.keyspace, plan.table
                        )));
                    }
                    Ok(Outcome::Rows(apply_conditional(db, &plan)?))
                } else {
                    apply(db, &plan)?;
                    Ok(Outcome::Void)
                }
            }
            Statement::Batch { kind, statements } => {
                let plans = statements
                    .iter()
                    .map(|s| plan_write(db, s, session, &[]).map(|p| (p, has_condition(s))))
                    .collect::<Result<Vec<_>, _>>()?;
                apply_batch(db, *kind, &plans)
            }
            Statement::Use { keyspace } => {
                if !db.keyspaces.contains_key(keyspace) && !is_system_keyspace(keyspace) {
                    return Err(DbError::invalid(format!(
                        "Keyspace '{keyspace}' does not exist"
                    )));
                }
                Ok(Outcome::SetKeyspace(keyspace.clone()))
            }
            Statement::CreateKeyspace {
                name,
                if_not_exists,
                replication,
                durable_writes,
                tablets,
            } => {
                // Options are checked before existence, as on a real node: `IF NOT EXISTS`
                // does not make an unknown option acceptable.
                let replication = normalize_replication(replication)?;
                let tablets = uses_tablets(db.node.tablets, &replication, tablets.as_deref())?;
                if db.keyspaces.contains_key(name) || is_system_keyspace(name) {
                    if *if_not_exists {
                        return Ok(Outcome::Void);
                    }
                    return Err(DbError::AlreadyExists {
                        message: format!("Cannot add existing keyspace \"{name}\""),
                        keyspace: name.clone(),
                        table: String::new(),
                    });
                }
                db.keyspaces.insert(
                    name.clone(),
                    Keyspace {
                        replication,
                        durable_writes: *durable_writes,
                        tablets,
                        tables: Default::default(),
                    },
                );
                Ok(schema_change(db, "CREATED", name, None))
            }
            s @ Statement::CreateTable { .. } => create_table(db, s, session),
            Statement::DropKeyspace { name, if_exists } => {
                if db.keyspaces.remove(name).is_none() {
                    if *if_exists {
                        return Ok(Outcome::Void);
                    }
                    return Err(DbError::invalid(format!(
                        "Cannot drop non existing keyspace '{name}'."
                    )));
                }
                Ok(schema_change(db, "DROPPED", name, None))
            }
            Statement::DropTable {
                table: name,
                if_exists,
            } => {
                let (ks, t) = resolve(name, session)?;
                let removed = db.keyspaces.get_mut(&ks).and_then(|k| k.tables.remove(&t));
                if removed.is_none() {
                    if *if_exists {
                        return Ok(Outcome::Void);
                    }
                    return Err(DbError::invalid(format!(
                        "Cannot drop non existing table '{t}' in keyspace '{ks}'."
                    )));
                }
                Ok(schema_change(db, "DROPPED", &ks, Some(&t)))
            }
            Statement::Truncate { table: name } => {
                let (ks, t) = resolve(name, session)?;
                table_mut(db, &ks, &t)?.partitions.clear();
                Ok(Outcome::Void)
            }
            _ => Err(DbError::invalid("unsupported statement")),
        }
    }

    /// Runs a `BATCH` request: every statement is validated first, then all are applied under
    /// the same lock, so the batch is all-or-nothing.
    pub fn batch(&self, kind: BatchKind, items: &[BatchItem]) -> Result<Outcome, DbError> {
        let mut bound = Vec::with_capacity(items.len());
        for item in items {
            if !is_write(&item.parsed.statement) {
                return Err(DbError::invalid(
                    "Only INSERT, UPDATE and DELETE statements are allowed in a BATCH",
                ));
            }
            let schema = self.statement_schema(&item.parsed, item.keyspace.as_deref())?;
            let specs = marker_specs(&item.parsed, schema.as_deref())?;
            bound.push(bind_values(&specs, &item.values)?);
        }
        let mut db = lock(&self.db);
        let db = &mut *db;
        let plans = items
            .iter()
            .zip(&bound)
            .map(|(item, binds)| {
                plan_write(db, &item.parsed.statement, item.keyspace.as_deref(), binds)
                    .map(|p| (p, has_condition(&item.parsed.statement)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        apply_batch(db, kind, &plans)
    }
}

fn apply_batch(
    db: &mut Database,
    kind: BatchKind,
    plans: &[(WritePlan, bool)],
) -> Result<Outcome, DbError> {
    if plans.iter().any(|(_, conditional)| *conditional) {
        return Err(DbError::invalid(
            "Conditional (IF ...) statements in a BATCH are not supported by this test node",
        ));
    }
    for (plan, _) in plans {
        match (kind, is_counter_write(plan)) {
            (BatchKind::Counter, false) => {
                return Err(DbError::invalid(
                    "Only counter mutations are allowed in COUNTER batches",
                ));
            }
            (BatchKind::Logged | BatchKind::Unlogged, true) => {
                return Err(DbError::invalid(
                    "Counter mutations are only allowed in COUNTER batches",
                ));
            }
            _ => {}
        }
    }
    for (plan, _) in plans {
        apply(db, plan)?;
    }
    Ok(Outcome::Void)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::NodeInfo;

    fn engine() -> Engine {
        engine_with(Tablets::DefaultOn)
    }

    fn engine_with(tablets: Tablets) -> Engine {
        Engine::new(Database::new(NodeInfo {
            address: std::net::IpAddr::from([127, 0, 0, 1]),
            datacenter: "dc".into(),
            rack: "r".into(),
            cluster_name: "c".into(),
            host_id: Uuid::nil(),
            release_version: "3.0.8".into(),
            tokens: vec![0],
            tablets,
        }))
    }

    #[test]
    fn tablets_are_the_default_for_network_topology_keyspaces_and_refuse_lwt() {
        let e = engine();
        let nts = "{'class': 'NetworkTopologyStrategy', 'replication_factor': 1}";
        for (ks, options, tablets) in [
            ("on", "", true),
            ("off", " AND tablets = {'enabled': false}", false),
            (
                "explicit",
                " AND tablets = {'enabled': true, 'initial': 8}",
                true,
            ),
        ] {
            run(
                &e,
                &format!("CREATE KEYSPACE {ks} WITH replication = {nts}{options}"),
            )
            .expect(ks);
            run(
                &e,
                &format!("CREATE TABLE {ks}.t (k int PRIMARY KEY, v int)"),
            )
            .expect(ks);
            run(&e, &format!("INSERT INTO {ks}.t (k, v) VALUES (1, 1)")).expect(ks);
            let lwt = run(
                &e,
                &format!("INSERT INTO {ks}.t (k, v) VALUES (2, 2) IF NOT EXISTS"),
            );
            match (tablets, lwt) {
                (true, Err(DbError::Invalid(m))) => {
                    assert!(m.contains("LWT is not yet supported with tablets"), "{m}")
                }
                (false, Ok(Outcome::Rows(_))) => {}
                (_, other) => panic!("{ks}: {other:?}"),
            }
        }
        let scylla_keyspaces: Vec<Row> = e.with_db(|db| {
            let t = db
                .system_table("system_schema", "scylla_keyspaces")
                .expect("the table");
            t.partitions
                .values()
                .flat_map(|p| p.rows.values().cloned())
                .collect()
        });
        let tablet_keyspaces: Vec<&Value> = scylla_keyspaces
            .iter()
            .filter(|r| r[1].is_some())
            .filter_map(|r| r[0].as_ref())
            .collect();
        assert_eq!(tablet_keyspaces.len(), 2, "{scylla_keyspaces:?}");
        // SimpleStrategy never has tablets; asking for them is an error.
        run(
            &e,
            "CREATE KEYSPACE simple WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
        )
        .expect("simple");
        assert!(matches!(
            run(
                &e,
                "CREATE KEYSPACE simple2 WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1} AND tablets = {'enabled': true}",
            ),
            Err(DbError::Config(_))
        ));
        assert!(matches!(
            run(
                &e,
                &format!(
                    "CREATE KEYSPACE bad WITH replication = {nts} AND tablets = {{'enabled': 'maybe'}}"
                ),
            ),
            Err(DbError::Config(_))
        ));
    }

    #[test]
    fn a_node_without_tablets_refuses_the_option_even_for_an_existing_keyspace() {
        let e = engine_with(Tablets::Unknown);
        let create = "CREATE KEYSPACE IF NOT EXISTS ks WITH replication = {'class': 'NetworkTopologyStrategy', 'replication_factor': 1}";
        run(&e, create).expect("plain");
        match run(&e, &format!("{create} AND tablets = {{'enabled': false}}")) {
            Err(DbError::Syntax(m)) => assert!(m.contains("Unknown property 'tablets'"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(
            e.with_db(|db| db.system_table("system_schema", "scylla_keyspaces"))
                .is_none()
        );
        run(&e, "CREATE TABLE ks.t (k int PRIMARY KEY, v int)").expect("table");
        assert!(matches!(
            run(&e, "INSERT INTO ks.t (k, v) VALUES (2, 2) IF NOT EXISTS"),
            Ok(Outcome::Rows(_))
        ));
    }

    fn run(e: &Engine, q: &str) -> Result<Outcome, DbError> {
        let parsed = crate::cql::parse(q)?;
        e.run(&parsed, Some("ks"), &[], &Paging::default())
    }

    fn rows(e: &Engine, q: &str) -> Vec<Row> {
        match run(e, q) {
            Ok(Outcome::Rows(r)) => r.rows,
            other => panic!("{q}: {other:?}"),
        }
    }

    fn setup() -> Engine {
        let e = engine();
        for q in [
            "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
            "CREATE TABLE t (p int, c int, v text, PRIMARY KEY (p, c)) WITH CLUSTERING ORDER BY (c DESC)",
        ] {
            assert!(run(&e, q).is_ok(), "{q}");
        }
        for c in 0..5 {
            assert!(
                run(
                    &e,
                    &format!("INSERT INTO t (p, c, v) VALUES (1, {c}, 'v{c}')")
                )
                .is_ok()
            );
        }
        e
    }

    #[test]
    fn clustering_ranges_follow_declared_order() {
        let e = setup();
        let got = rows(&e, "SELECT c FROM t WHERE p = 1 AND c >= 1 AND c < 4");
        assert_eq!(
            got,
            vec![
                vec![Some(Value::Int(3))],
                vec![Some(Value::Int(2))],
                vec![Some(Value::Int(1))]
            ]
        );
        let asc = rows(&e, "SELECT c FROM t WHERE p = 1 ORDER BY c ASC LIMIT 2");
        assert_eq!(
            asc,
            vec![vec![Some(Value::Int(0))], vec![Some(Value::Int(1))]]
        );
    }

    #[test]
    fn filtering_needs_allow_filtering() {
        let e = setup();
        assert!(matches!(
            run(&e, "SELECT * FROM t WHERE v = 'v1'"),
            Err(DbError::Invalid(_))
        ));
        assert_eq!(
            rows(&e, "SELECT c FROM t WHERE v = 'v1' ALLOW FILTERING").len(),
            1
        );
    }

    #[test]
    fn paging_resumes_after_the_last_row() {
        let e = setup();
        let parsed = crate::cql::parse("SELECT c FROM t WHERE p = 1").map_err(DbError::from);
        let Ok(parsed) = parsed else { panic!("parse") };
        let mut paging = Paging {
            page_size: Some(2),
            state: None,
        };
        let mut seen = Vec::new();
        loop {
            let Ok(Outcome::Rows(r)) = e.run(&parsed, Some("ks"), &[], &paging) else {
                panic!("select")
            };
            seen.extend(r.rows);
            match r.paging_state {
                Some(s) => paging.state = Some(s),
                None => break,
            }
        }
        assert_eq!(seen.len(), 5);
        assert_eq!(seen[0], vec![Some(Value::Int(4))]);
    }

    #[test]
    fn lwt_reports_existing_row() {
        let e = setup();
        let got = rows(
            &e,
            "INSERT INTO t (p, c, v) VALUES (1, 1, 'x') IF NOT EXISTS",
        );
        assert_eq!(got[0][0], Some(Value::Boolean(false)));
        assert_eq!(got[0][3], Some(Value::Text("v1".into())));
        let got = rows(&e, "UPDATE t SET v = 'y' WHERE p = 1 AND c = 1 IF v = 'v1'");
        assert_eq!(got[0][0], Some(Value::Boolean(true)));
    }
}
