//! Reading spec types out of parsed TOML so that every error names the key path it is about
//! (`data.dataset.csv.missing: unknown value ...`), not just the section.
//!
//! toml's own value deserializer loses the path inside arrays and says nothing for variants of enums decided by
//! the value's shape; this one walks `&toml::Value` itself and records the innermost path at which an error
//! arose. Enums that accept several shapes (`3` or `[3, 1]`, a name or a table) implement `Deserialize` by hand,
//! dispatching on the shape, so their inner errors keep their paths too.

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Expected, IntoDeserializer, Unexpected, Visitor};
use serde::forward_to_deserialize_any;
use toml::Value;

use super::suggest::hint;
use crate::error::{Error, Result};

/// Deserializes `value`, the TOML found at `location` (`train`, `model.layers[2]`), into `T`; errors carry the full
/// key path of what was wrong.
pub fn parse<T: DeserializeOwned>(value: &Value, location: &str) -> Result<T> {
    T::deserialize(Node { value, path: "" }).map_err(|e| {
        let error = Error::new(e.message);
        match e.path.as_deref() {
            None | Some("") => error.at(location),
            Some(path) => error.at(path).at(location),
        }
    })
}

/// A deserialization error and the key path (relative to where deserialization started) where it arose.
#[derive(Debug)]
pub struct DeError {
    message: String,
    path: Option<String>,
}

impl DeError {
    /// Records `path` unless a deeper one is already known.
    fn at(mut self, path: &str) -> Self {
        if self.path.is_none() {
            self.path = Some(path.to_string());
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) if !p.is_empty() => write!(f, "{p}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for DeError {}

/// What a value is, in TOML's words.
fn describe(unexp: &Unexpected) -> String {
    match unexp {
        Unexpected::Map => "a table".into(),
        Unexpected::Seq => "an array".into(),
        Unexpected::Str(s) => format!("the string \"{s}\""),
        Unexpected::Signed(v) => format!("the integer {v}"),
        Unexpected::Unsigned(v) => format!("the integer {v}"),
        Unexpected::Float(v) => format!("the number {v}"),
        Unexpected::Bool(v) => format!("{v}"),
        other => other.to_string(),
    }
}

fn expected(exp: &dyn Expected) -> String {
    exp.to_string().replace("a sequence", "an array")
}

fn one_of(names: &[&str]) -> String {
    names.join(", ")
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            path: None,
        }
    }

    fn invalid_type(unexp: Unexpected, exp: &dyn Expected) -> Self {
        Self::custom(format!("expected {}, found {}", expected(exp), describe(&unexp)))
    }

    fn invalid_value(unexp: Unexpected, exp: &dyn Expected) -> Self {
        Self::custom(format!("expected {}, found {}", expected(exp), describe(&unexp)))
    }

    fn invalid_length(len: usize, exp: &dyn Expected) -> Self {
        Self::custom(format!("expected {}, found {len} elements", expected(exp)))
    }

    fn unknown_variant(variant: &str, names: &'static [&'static str]) -> Self {
        Self::custom(format!(
            "unknown value `{variant}`{}; valid values: {}",
            hint(variant, names.iter().copied()),
            one_of(names)
        ))
    }

    fn unknown_field(field: &str, names: &'static [&'static str]) -> Self {
        Self::custom(format!(
            "unknown option `{field}`{}; valid options: {}",
            hint(field, names.iter().copied()),
            one_of(names)
        ))
    }

    fn missing_field(field: &'static str) -> Self {
        Self::custom(format!("missing option `{field}`"))
    }

    fn duplicate_field(field: &'static str) -> Self {
        Self::custom(format!("option `{field}` is given twice"))
    }
}

fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

fn unexpected(value: &Value) -> Unexpected<'_> {
    match value {
        Value::String(s) => Unexpected::Str(s),
        Value::Integer(i) => Unexpected::Signed(*i),
        Value::Float(f) => Unexpected::Float(*f),
        Value::Boolean(b) => Unexpected::Bool(*b),
        Value::Datetime(_) => Unexpected::Other("a date-time"),
        Value::Array(_) => Unexpected::Seq,
        Value::Table(_) => Unexpected::Map,
    }
}

/// A value and its key path.
#[derive(Clone, Copy)]
struct Node<'de, 'p> {
    value: &'de Value,
    path: &'p str,
}

impl<'de> de::Deserializer<'de> for Node<'de, '_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> std::result::Result<V::Value, DeError> {
        let result = match self.value {
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Integer(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Boolean(b) => visitor.visit_bool(*b),
            Value::Datetime(d) => visitor.visit_string(d.to_string()),
            Value::Array(items) => {
                let mut seq = Seq {
                    items: items.iter().enumerate(),
                    path: self.path,
                };
                let out = visitor.visit_seq(&mut seq)?;
                match seq.items.len() {
                    0 => Ok(out),
                    more => Err(de::Error::custom(format!(
                        "expected {} elements, found {}",
                        items.len() - more,
                        items.len()
                    ))),
                }
            }
            Value::Table(table) => {
                let mut map = Map {
                    entries: table.iter(),
                    pending: None,
                    path: self.path,
                };
                visitor.visit_map(&mut map)
            }
        };
        result.map_err(|e| e.at(self.path))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> std::result::Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> std::result::Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> std::result::Result<V::Value, DeError> {
        match self.value {
            Value::Table(_) => self.deserialize_any(visitor),
            other => Err(<DeError as de::Error>::custom(format!(
                "expected a table of options ({}), found {}",
                one_of(fields),
                describe(&unexpected(other))
            ))
            .at(self.path)),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> std::result::Result<V::Value, DeError> {
        let result = match self.value {
            Value::String(variant) => visitor.visit_enum(Enum {
                variant,
                options: None,
                path: self.path,
            }),
            Value::Table(table) if table.len() == 1 => {
                let (variant, options) = table.iter().next().expect("one entry");
                visitor
                    .visit_enum(Enum {
                        variant,
                        options: Some(options),
                        path: self.path,
                    })
                    .map_err(|mut e| {
                        if e.path.is_none() {
                            e.message = e.message.replacen("unknown value", "unknown kind", 1).replacen(
                                "; valid values:",
                                "; valid kinds:",
                                1,
                            );
                        }
                        e
                    })
            }
            other => Err(de::Error::custom(format!(
                "expected one of {} (a name, or a table with one of them as its only key), found {}",
                one_of(variants),
                describe(&unexpected(other))
            ))),
        };
        result.map_err(|e| e.at(self.path))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> std::result::Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit unit_struct seq
        tuple tuple_struct map identifier
    }
}

struct Seq<'de, 'p> {
    items: std::iter::Enumerate<std::slice::Iter<'de, Value>>,
    path: &'p str,
}

impl<'de> de::SeqAccess<'de> for Seq<'de, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> std::result::Result<Option<T::Value>, DeError> {
        match self.items.next() {
            None => Ok(None),
            Some((i, value)) => {
                let path = format!("{}[{i}]", self.path);
                seed.deserialize(Node { value, path: &path })
                    .map(Some)
                    .map_err(|e| e.at(&path))
            }
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Map<'de, 'p> {
    entries: toml::map::Iter<'de, String, Value>,
    pending: Option<(&'de str, &'de Value)>,
    path: &'p str,
}

impl<'de> de::MapAccess<'de> for Map<'de, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> std::result::Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            None => Ok(None),
            Some((key, value)) => {
                self.pending = Some((key, value));
                seed.deserialize(de::value::BorrowedStrDeserializer::new(key)).map(Some)
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> std::result::Result<V::Value, DeError> {
        let (key, value) = self
            .pending
            .take()
            .ok_or_else(|| <DeError as de::Error>::custom("a value without its key"))?;
        let path = child(self.path, key);
        seed.deserialize(Node { value, path: &path }).map_err(|e| e.at(&path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// An enum written as its variant's name (`"relu"`) or as a table with the variant's name as its only key
/// (`{ huber = { delta = 2.0 } }`).
struct Enum<'de, 'p> {
    variant: &'de str,
    options: Option<&'de Value>,
    path: &'p str,
}

impl<'de, 'p> de::EnumAccess<'de> for Enum<'de, 'p> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> std::result::Result<(V::Value, Self), DeError> {
        let variant = seed.deserialize(self.variant.into_deserializer())?;
        Ok((variant, self))
    }
}

impl<'de> Enum<'de, '_> {
    fn options(&self) -> std::result::Result<(&'de Value, String), DeError> {
        match self.options {
            Some(value) => Ok((value, child(self.path, self.variant))),
            None => Err(de::Error::custom(format!(
                "`{0}` takes options: write {{ {0} = {{ ... }} }}",
                self.variant
            ))),
        }
    }
}

impl<'de> de::VariantAccess<'de> for Enum<'de, '_> {
    type Error = DeError;

    fn unit_variant(self) -> std::result::Result<(), DeError> {
        match self.options {
            None => Ok(()),
            Some(Value::Table(t)) if t.is_empty() => Ok(()),
            Some(other) => Err(de::Error::custom(format!(
                "`{}` takes no options, found {}",
                self.variant,
                describe(&unexpected(other))
            ))),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> std::result::Result<T::Value, DeError> {
        let (value, path) = self.options()?;
        seed.deserialize(Node { value, path: &path }).map_err(|e| e.at(&path))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> std::result::Result<V::Value, DeError> {
        let (value, path) = self.options()?;
        de::Deserializer::deserialize_any(Node { value, path: &path }, visitor).map_err(|e| e.at(&path))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> std::result::Result<V::Value, DeError> {
        let (value, path) = self.options()?;
        de::Deserializer::deserialize_struct(Node { value, path: &path }, "", fields, visitor).map_err(|e| e.at(&path))
    }
}

/// The error for a table that should name one of `kinds` as its only key (`{ csv = { ... } }`), or `None` when
/// `key` is one of them. `what`: what the kinds are (`data source`).
pub fn unknown_kind(what: &str, key: &str, kinds: &[&str]) -> Option<String> {
    (!kinds.contains(&key)).then(|| {
        format!(
            "unknown {what} `{key}`{}; valid: {}",
            hint(key, kinds.iter().copied()),
            one_of(kinds)
        )
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        size: usize,
        #[serde(default)]
        mode: Mode,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        #[default]
        Fast,
        Slow,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        items: Vec<Inner>,
        #[serde(default)]
        named: BTreeMap<String, Inner>,
        pair: Option<[usize; 2]>,
    }

    fn outer(src: &str) -> Result<Outer> {
        let table: toml::Table = toml::from_str(src).unwrap();
        parse(&Value::Table(table), "section")
    }

    #[test]
    fn reads_what_toml_reads() {
        let o = outer("items = [{ size = 2 }, { size = 3, mode = \"slow\" }]\npair = [1, 2]\nnamed.a = { size = 1 }")
            .unwrap();
        assert_eq!(
            o.items[1],
            Inner {
                size: 3,
                mode: Mode::Slow
            }
        );
        assert_eq!(o.pair, Some([1, 2]));
        assert_eq!(o.named["a"].size, 1);
    }

    #[test]
    fn errors_name_the_innermost_key_path() {
        let cases = [
            (
                "items = [{ size = 2 }, { size = 3, mdoe = \"slow\" }]",
                "section.items[1]: unknown option `mdoe`; did you mean `mode`?; valid options: size, mode",
            ),
            (
                "items = [{ size = 2, mode = \"slw\" }]",
                "section.items[0].mode: unknown value `slw`; did you mean `slow`?; valid values: fast, slow",
            ),
            (
                "items = [{ size = \"2\" }]",
                "section.items[0].size: expected usize, found the string \"2\"",
            ),
            ("items = []\nnamed.b = {}", "section.named.b: missing option `size`"),
            (
                "items = []\npair = [1, 2, 3]",
                "section.pair: expected 2 elements, found 3",
            ),
            (
                "items = [3]",
                "section.items[0]: expected a table of options (size, mode), found the integer 3",
            ),
            (
                "items = \"x\"",
                "section.items: expected an array, found the string \"x\"",
            ),
        ];
        for (src, want) in cases {
            assert_eq!(outer(src).unwrap_err().to_string(), want, "{src}");
        }
    }
}
