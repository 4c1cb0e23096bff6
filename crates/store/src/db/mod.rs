//! The store's SQL layer: one way to run statements on either engine.
//!
//! Every store method is written once against [`Conn`] in the SQL both
//! engines read (`?N` placeholders, `ON CONFLICT`, `RETURNING`, `CASE`
//! rather than two-argument `MAX`, `CAST(.. AS BIGINT)` around sums), with
//! arguments and columns as [`Value`]s. [`sqlite`] runs it on the embedded
//! database, [`postgres`] on a PostgreSQL server (placeholders become `$N`;
//! schema types are widened in [`crate::migrations`]).

pub mod postgres;
pub mod sqlite;

use crate::{Error, Result};

/// One SQL value, as both engines hand them over.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// A Rust value that can be a statement's argument.
pub trait ToValue {
    fn to_value(&self) -> Value;
}

/// A Rust value that a column can be read as.
pub trait FromValue: Sized {
    /// `Err` names what the value was instead.
    fn from_value(v: &Value) -> std::result::Result<Self, String>;
}

impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        match self {
            Some(v) => v.to_value(),
            None => Value::Null,
        }
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}

impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}

macro_rules! int_values {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                // Values past i64 (u64 sizes above 8 EiB) are stored as
                // the largest: no size or count reaches it.
                Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }
        impl FromValue for $t {
            fn from_value(v: &Value) -> std::result::Result<Self, String> {
                match v {
                    Value::Int(i) => <$t>::try_from(*i)
                        .map_err(|_| format!("{i} is out of range for {}", stringify!($t))),
                    other => Err(format!("{other:?} is not an integer")),
                }
            }
        }
    )*};
}
int_values!(i64, i32, u32, u64, usize, u16, u8);

impl FromValue for f64 {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Real(f) => Ok(*f),
            Value::Int(i) => Ok(*i as f64),
            other => Err(format!("{other:?} is not a number")),
        }
    }
}

impl FromValue for bool {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Int(i) => Ok(*i != 0),
            other => Err(format!("{other:?} is not a boolean")),
        }
    }
}

impl FromValue for String {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            other => Err(format!("{other:?} is not text")),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Blob(b) => Ok(b.clone()),
            Value::Text(s) => Ok(s.as_bytes().to_vec()),
            other => Err(format!("{other:?} is not bytes")),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

impl FromValue for Value {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        Ok(v.clone())
    }
}

/// One result row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    /// Column `i` read as `T`.
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T> {
        let v = self
            .0
            .get(i)
            .ok_or_else(|| Error::Sql(format!("a row has no column {i}")))?;
        T::from_value(v).map_err(|e| Error::Sql(format!("column {i}: {e}")))
    }
}

/// The arguments of a statement: `args![a, b]`.
#[macro_export]
#[doc(hidden)]
macro_rules! args {
    ($($e:expr),* $(,)?) => {
        &[$(&$e as &dyn $crate::db::ToValue),*] as &[&dyn $crate::db::ToValue]
    };
}

/// A connection of either engine, as the store's methods use it.
pub trait Conn {
    /// Runs one statement; the number of rows it changed.
    fn execute(&mut self, sql: &str, args: &[&dyn ToValue]) -> Result<u64>;
    /// Runs one query; all its rows.
    fn query(&mut self, sql: &str, args: &[&dyn ToValue]) -> Result<Vec<Row>>;
    /// Runs statements separated by `;`, without arguments.
    fn batch(&mut self, sql: &str) -> Result<()>;

    /// The first row of a query, if any.
    fn query_opt(&mut self, sql: &str, args: &[&dyn ToValue]) -> Result<Option<Row>> {
        Ok(self.query(sql, args)?.into_iter().next())
    }

    /// The one row of a query (an error when there is none).
    fn query_one(&mut self, sql: &str, args: &[&dyn ToValue]) -> Result<Row> {
        self.query_opt(sql, args)?
            .ok_or_else(|| Error::Sql(format!("no row for {sql:?}")))
    }
}

/// `sql` with SQLite's `?N` and `?` placeholders as PostgreSQL's `$N`
/// (text in quotes and identifiers in double quotes left alone).
pub fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut next = 0u32;
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => {
                quote = Some(c);
                out.push(c);
            }
            '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                if digits.is_empty() {
                    next += 1;
                    out.push_str(&format!("${next}"));
                } else {
                    out.push('$');
                    out.push_str(&digits);
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars_outside_quotes() {
        assert_eq!(
            dollar_placeholders("SELECT a FROM t WHERE b = ?1 AND c = ?12 AND d = '?2'"),
            "SELECT a FROM t WHERE b = $1 AND c = $12 AND d = '?2'"
        );
        assert_eq!(dollar_placeholders("VALUES (?, ?)"), "VALUES ($1, $2)");
    }

    #[test]
    fn values_convert_both_ways() {
        assert_eq!(Some(5u64).to_value(), Value::Int(5));
        assert_eq!(None::<String>.to_value(), Value::Null);
        assert_eq!(u64::MAX.to_value(), Value::Int(i64::MAX));
        assert_eq!(u32::from_value(&Value::Int(7)), Ok(7));
        assert!(u32::from_value(&Value::Int(-1)).is_err());
        assert_eq!(Option::<i64>::from_value(&Value::Null), Ok(None));
        let r = Row(vec![Value::Text("x".into()), Value::Int(1)]);
        assert_eq!(r.get::<String>(0).unwrap(), "x");
        assert!(r.get::<bool>(1).unwrap());
        assert!(r.get::<String>(1).is_err());
        assert!(r.get::<String>(2).is_err());
    }
}
