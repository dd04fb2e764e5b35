//! The table a database sink writes into: its name, its key columns, the item's columns,
//! and the column list the SQL names. Shared by the PostgreSQL and SQLite sinks.

/// Where a database sink's rows go.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub(crate) name: String,
    /// The queue id's and the sequence number's columns.
    pub(crate) key: (String, String),
    /// The user's columns (`columns` on the builder); none: one column `item`.
    pub(crate) columns: Vec<String>,
    /// `CREATE TABLE IF NOT EXISTS` at the first connection.
    pub(crate) create: bool,
}

impl Default for Table {
    fn default() -> Self {
        Table {
            name: "vinequeue_items".into(),
            key: ("queue_id".into(), "seq".into()),
            columns: Vec::new(),
            create: true,
        }
    }
}

/// A table's names, quoted for the SQL.
pub(crate) struct Quoted {
    pub(crate) table: String,
    pub(crate) queue_id: String,
    pub(crate) seq: String,
    /// Every column a row fills, key first.
    pub(crate) list: Vec<String>,
}

impl Table {
    /// Refuses an empty name, and user columns (`mapped`) that name no column.
    pub(crate) fn check(&self, backend: &str, mapped: bool) -> Result<(), String> {
        let names = [&self.name, &self.key.0, &self.key.1];
        if names.iter().any(|n| n.is_empty()) || self.columns.iter().any(String::is_empty) {
            return Err(format!("{backend} sink: a table or column name is empty"));
        }
        if mapped && self.columns.is_empty() {
            return Err(format!("{backend} sink: `columns` names no column"));
        }
        Ok(())
    }

    /// The names quoted by `quote` (each backend quotes its own way).
    pub(crate) fn quoted(&self, quote: impl Fn(&str) -> String) -> Quoted {
        let (queue_id, seq) = (quote(&self.key.0), quote(&self.key.1));
        let mut list = vec![queue_id.clone(), seq.clone()];
        if self.columns.is_empty() {
            list.push(quote("item"));
        } else {
            list.extend(self.columns.iter().map(|c| quote(c)));
        }
        Quoted {
            table: quote(&self.name),
            queue_id,
            seq,
            list,
        }
    }
}
