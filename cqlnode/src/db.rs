//! The in-memory database: keyspaces, table schemas and rows, plus the virtual `system` and
//! `system_schema` tables generated from them on every read (so they can never go stale).
//!
//! Layout of a table: partitions in a `BTreeMap` keyed by `(token, serialized key)`, so a full
//! scan walks them in token order as a real ring would; rows of a partition in a `BTreeMap`
//! keyed by clustering values wrapped in [`KeyPart`], so iteration order *is* clustering order
//! (including `DESC` columns). Every row holds all of its cells, key columns included, in the
//! table's column order.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use uuid::Uuid;

use crate::cql::ColumnDef;
use crate::murmur3;
use crate::node::Tablets;
use crate::value::{CqlType, KeyPart, Value};

/// The role of a column in its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    PartitionKey,
    Clustering,
    Regular,
}

/// A table's definition.
#[derive(Debug, Clone)]
pub struct TableSchema {
    pub keyspace: String,
    pub name: String,
    pub id: Uuid,
    /// Partition key columns, then clustering columns, then the others (the `SELECT *` order).
    pub columns: Vec<ColumnDef>,
    pub partition_key: Vec<usize>,
    pub clustering: Vec<usize>,
    /// Per clustering column: declared `DESC`.
    pub descending: Vec<bool>,
    /// A counter table: every regular column is a counter.
    pub is_counter: bool,
}

impl TableSchema {
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    pub fn kind(&self, index: usize) -> ColumnKind {
        if self.partition_key.contains(&index) {
            ColumnKind::PartitionKey
        } else if self.clustering.contains(&index) {
            ColumnKind::Clustering
        } else {
            ColumnKind::Regular
        }
    }

    /// Builds the partition key of a row from its key values (in partition key order).
    pub fn partition_key_of(&self, values: &[Value]) -> PartitionKey {
        let bytes = serialize_partition_key(values);
        PartitionKey {
            token: murmur3::token(&bytes),
            bytes,
        }
    }

    pub fn clustering_key_of(&self, values: &[Value]) -> ClusteringKey {
        ClusteringKey(
            values
                .iter()
                .zip(&self.descending)
                .map(|(v, desc)| KeyPart {
                    value: v.clone(),
                    desc: *desc,
                })
                .collect(),
        )
    }
}

/// The partitioner's input: one column's bytes, or for composite keys each component as
/// `[u16 length][bytes][0x00]` (Cassandra's `CompositeType` encoding, which the driver mirrors).
pub fn serialize_partition_key(values: &[Value]) -> Vec<u8> {
    if let [single] = values {
        return single.encode();
    }
    let mut out = Vec::new();
    for v in values {
        let b = v.encode();
        out.extend_from_slice(&u16::try_from(b.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(&b);
        out.push(0);
    }
    out
}

/// Where a partition sits on the ring; ordered by token, then by key bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PartitionKey {
    pub token: i64,
    pub bytes: Vec<u8>,
}

/// A row's position inside its partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClusteringKey(pub Vec<KeyPart>);

/// A row: one optional cell per table column.
pub type Row = Vec<Option<Value>>;

#[derive(Debug, Clone, Default)]
pub struct Partition {
    pub rows: BTreeMap<ClusteringKey, Row>,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub schema: Arc<TableSchema>,
    pub partitions: BTreeMap<PartitionKey, Partition>,
}

impl Table {
    pub fn new(schema: TableSchema) -> Table {
        Table {
            schema: Arc::new(schema),
            partitions: BTreeMap::new(),
        }
    }

    /// Inserts (or replaces) a whole row; used to fill the virtual system tables.
    pub fn put_row(&mut self, row: Row) {
        let pk: Vec<Value> = self
            .schema
            .partition_key
            .iter()
            .filter_map(|&i| row[i].clone())
            .collect();
        let ck: Vec<Value> = self
            .schema
            .clustering
            .iter()
            .filter_map(|&i| row[i].clone())
            .collect();
        let pk = self.schema.partition_key_of(&pk);
        let ck = self.schema.clustering_key_of(&ck);
        self.partitions.entry(pk).or_default().rows.insert(ck, row);
    }

    pub fn row_count(&self) -> usize {
        self.partitions.values().map(|p| p.rows.len()).sum()
    }
}

/// A keyspace's definition and tables.
#[derive(Debug, Clone)]
pub struct Keyspace {
    pub replication: Vec<(String, String)>,
    pub durable_writes: bool,
    /// Created with ScyllaDB's tablets (see [`crate::Tablets`]): LWTs on its tables are refused.
    pub tablets: bool,
    pub tables: BTreeMap<String, Table>,
}

/// What `system.local` says about this node.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub address: IpAddr,
    pub datacenter: String,
    pub rack: String,
    pub cluster_name: String,
    pub host_id: Uuid,
    pub release_version: String,
    pub tokens: Vec<i64>,
    pub tablets: Tablets,
}

/// All state of the node that statements read and write.
#[derive(Debug)]
pub struct Database {
    pub keyspaces: BTreeMap<String, Keyspace>,
    /// Changed by every schema change, so that the driver's schema agreement check (which
    /// compares `system.local.schema_version` across nodes) sees a fresh value.
    pub schema_version: Uuid,
    pub node: NodeInfo,
}

/// Keyspaces answered from generated tables.
pub fn is_system_keyspace(name: &str) -> bool {
    matches!(name, "system" | "system_schema")
}

impl Database {
    pub fn new(node: NodeInfo) -> Database {
        Database {
            keyspaces: BTreeMap::new(),
            schema_version: Uuid::new_v4(),
            node,
        }
    }

    /// Builds a virtual system table, or `None` if this node does not have it (the driver
    /// treats the resulting "unconfigured table" Invalid error as "not ScyllaDB").
    pub fn system_table(&self, keyspace: &str, name: &str) -> Option<Table> {
        use CqlType as T;
        let text = |s: &str| Some(Value::Text(s.to_string()));
        let text_set =
            |items: Vec<String>| Some(Value::Set(items.into_iter().map(Value::Text).collect()));
        match (keyspace, name) {
            ("system", "local") => {
                let mut t = virtual_table(
                    keyspace,
                    name,
                    &[
                        ("key", T::Text),
                        ("bootstrapped", T::Text),
                        ("broadcast_address", T::Inet),
                        ("cluster_name", T::Text),
                        ("cql_version", T::Text),
                        ("data_center", T::Text),
                        ("host_id", T::Uuid),
                        ("listen_address", T::Inet),
                        ("native_protocol_version", T::Text),
                        ("partitioner", T::Text),
                        ("rack", T::Text),
                        ("release_version", T::Text),
                        ("rpc_address", T::Inet),
                        ("schema_version", T::Uuid),
                        ("tokens", T::Set(Box::new(T::Text))),
                    ],
                    1,
                    0,
                );
                let n = &self.node;
                // ScyllaDB lists its cluster features in `supported_features` (a comma-separated
                // text; Cassandra has no such column): a node that knows tablets says `TABLETS`.
                if n.tablets == Tablets::DefaultOn {
                    let mut schema = (*t.schema).clone();
                    schema.columns.push(ColumnDef {
                        name: "supported_features".into(),
                        ty: T::Text,
                    });
                    t = Table::new(schema);
                }
                let mut local = vec![
                    text("local"),
                    text("COMPLETED"),
                    Some(Value::Inet(n.address)),
                    text(&n.cluster_name),
                    text("3.4.4"),
                    text(&n.datacenter),
                    Some(Value::Uuid(n.host_id)),
                    Some(Value::Inet(n.address)),
                    text("4"),
                    text("org.apache.cassandra.dht.Murmur3Partitioner"),
                    text(&n.rack),
                    text(&n.release_version),
                    Some(Value::Inet(n.address)),
                    Some(Value::Uuid(self.schema_version)),
                    text_set(n.tokens.iter().map(i64::to_string).collect()),
                ];
                if n.tablets == Tablets::DefaultOn {
                    local.push(text("LWT,TABLETS"));
                }
                t.put_row(local);
                Some(t)
            }
            ("system", "peers") => Some(virtual_table(
                keyspace,
                name,
                &[
                    ("peer", T::Inet),
                    ("data_center", T::Text),
                    ("host_id", T::Uuid),
                    ("preferred_ip", T::Inet),
                    ("rack", T::Text),
                    ("release_version", T::Text),
                    ("rpc_address", T::Inet),
                    ("schema_version", T::Uuid),
                    ("tokens", T::Set(Box::new(T::Text))),
                ],
                1,
                0,
            )),
            ("system_schema", "keyspaces") => {
                let mut t = virtual_table(
                    keyspace,
                    name,
                    &[
                        ("keyspace_name", T::Text),
                        ("durable_writes", T::Boolean),
                        ("replication", T::Map(Box::new(T::Text), Box::new(T::Text))),
                    ],
                    1,
                    0,
                );
                for (ks, def) in &self.keyspaces {
                    t.put_row(vec![
                        text(ks),
                        Some(Value::Boolean(def.durable_writes)),
                        Some(Value::Map(
                            def.replication
                                .iter()
                                .map(|(k, v)| (Value::Text(k.clone()), Value::Text(v.clone())))
                                .collect(),
                        )),
                    ]);
                }
                Some(t)
            }
            ("system_schema", "tables") => {
                let mut t = virtual_table(
                    keyspace,
                    name,
                    &[
                        ("keyspace_name", T::Text),
                        ("table_name", T::Text),
                        ("comment", T::Text),
                        ("default_time_to_live", T::Int),
                        ("flags", T::Set(Box::new(T::Text))),
                        ("id", T::Uuid),
                    ],
                    1,
                    1,
                );
                for (ks, def) in &self.keyspaces {
                    for (name, table) in &def.tables {
                        let flags = if table.schema.is_counter {
                            "counter"
                        } else {
                            "compound"
                        };
                        t.put_row(vec![
                            text(ks),
                            text(name),
                            text(""),
                            Some(Value::Int(0)),
                            text_set(vec![flags.to_string()]),
                            Some(Value::Uuid(table.schema.id)),
                        ]);
                    }
                }
                Some(t)
            }
            ("system_schema", "columns") => {
                let mut t = virtual_table(
                    keyspace,
                    name,
                    &[
                        ("keyspace_name", T::Text),
                        ("table_name", T::Text),
                        ("column_name", T::Text),
                        ("clustering_order", T::Text),
                        ("column_name_bytes", T::Blob),
                        ("kind", T::Text),
                        ("position", T::Int),
                        ("type", T::Text),
                    ],
                    1,
                    2,
                );
                for (ks, def) in &self.keyspaces {
                    for (table_name, table) in &def.tables {
                        let s = &table.schema;
                        for (i, column) in s.columns.iter().enumerate() {
                            let (kind, position, order) = match s.kind(i) {
                                ColumnKind::PartitionKey => (
                                    "partition_key",
                                    s.partition_key.iter().position(|&k| k == i),
                                    "none",
                                ),
                                ColumnKind::Clustering => {
                                    let pos = s.clustering.iter().position(|&k| k == i);
                                    let desc = pos.and_then(|p| s.descending.get(p).copied());
                                    (
                                        "clustering",
                                        pos,
                                        if desc == Some(true) { "desc" } else { "asc" },
                                    )
                                }
                                ColumnKind::Regular => ("regular", None, "none"),
                            };
                            let position =
                                position.and_then(|p| i32::try_from(p).ok()).unwrap_or(-1);
                            t.put_row(vec![
                                text(ks),
                                text(table_name),
                                text(&column.name),
                                text(order),
                                Some(Value::Blob(column.name.as_bytes().to_vec())),
                                text(kind),
                                Some(Value::Int(position)),
                                text(&column.ty.cql_name()),
                            ]);
                        }
                    }
                }
                Some(t)
            }
            // ScyllaDB's per-keyspace extensions: `initial_tablets` is set (0: automatic) for a
            // keyspace that uses tablets, null otherwise. The driver reads it to route tablet
            // keyspaces; the store reads it to refuse a keyspace where LWTs cannot work.
            ("system_schema", "scylla_keyspaces") if self.node.tablets == Tablets::DefaultOn => {
                let mut t = virtual_table(
                    keyspace,
                    name,
                    &[("keyspace_name", T::Text), ("initial_tablets", T::Int)],
                    1,
                    0,
                );
                for (ks, def) in &self.keyspaces {
                    t.put_row(vec![text(ks), def.tablets.then_some(Value::Int(0))]);
                }
                Some(t)
            }
            ("system_schema", "types") => Some(virtual_table(
                keyspace,
                name,
                &[
                    ("keyspace_name", T::Text),
                    ("type_name", T::Text),
                    ("field_names", T::List(Box::new(T::Text))),
                    ("field_types", T::List(Box::new(T::Text))),
                ],
                1,
                1,
            )),
            ("system_schema", "views") => Some(virtual_table(
                keyspace,
                name,
                &[
                    ("keyspace_name", T::Text),
                    ("view_name", T::Text),
                    ("base_table_id", T::Uuid),
                    ("base_table_name", T::Text),
                ],
                1,
                1,
            )),
            ("system_schema", "functions" | "aggregates" | "indexes" | "triggers") => {
                Some(virtual_table(
                    keyspace,
                    name,
                    &[("keyspace_name", T::Text), ("name", T::Text)],
                    1,
                    1,
                ))
            }
            _ => None,
        }
    }
}

/// A system table with the first `pk` columns as partition key and the next `ck` as clustering.
fn virtual_table(
    keyspace: &str,
    name: &str,
    columns: &[(&str, CqlType)],
    pk: usize,
    ck: usize,
) -> Table {
    Table::new(TableSchema {
        keyspace: keyspace.to_string(),
        name: name.to_string(),
        id: Uuid::nil(),
        columns: columns
            .iter()
            .map(|(n, ty)| ColumnDef {
                name: (*n).to_string(),
                ty: ty.clone(),
            })
            .collect(),
        partition_key: (0..pk).collect(),
        clustering: (pk..pk + ck).collect(),
        descending: vec![false; ck],
        is_counter: false,
    })
}
