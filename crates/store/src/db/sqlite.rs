//! [`Conn`] on the embedded SQLite database (rusqlite): statements are
//! prepared once and cached on the connection.

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::Connection;

use super::{Conn, Row, ToValue, Value};
use crate::{Error, Result};

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Real(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

fn value_of(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// A rusqlite error as the store's: constraint violations apart.
pub fn error(e: rusqlite::Error) -> Error {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Error::Constraint(e.to_string())
        }
        _ => Error::Sql(e.to_string()),
    }
}

fn values(args: &[&dyn ToValue]) -> Vec<Value> {
    args.iter().map(|a| a.to_value()).collect()
}

impl Conn for Connection {
    fn execute(&mut self, sql: &str, args: &[&dyn ToValue]) -> Result<u64> {
        let mut stmt = self.prepare_cached(sql).map_err(error)?;
        let n = stmt
            .execute(rusqlite::params_from_iter(values(args)))
            .map_err(error)?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &str, args: &[&dyn ToValue]) -> Result<Vec<Row>> {
        let mut stmt = self.prepare_cached(sql).map_err(error)?;
        let n = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(values(args)))
            .map_err(error)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(error)? {
            let mut cols = Vec::with_capacity(n);
            for i in 0..n {
                cols.push(value_of(r.get_ref(i).map_err(error)?));
            }
            out.push(Row(cols));
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        self.execute_batch(sql).map_err(error)
    }
}
