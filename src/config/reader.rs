//! The error-collecting reader: typed getters over one TOML table that record a `ConfigError`
//! for every problem and keep going, so a single pass reports everything.
//!
//! A getter returns `None` both when the key is absent and when its value was refused (the
//! refusal is already recorded); callers then fall back to the default, or skip the entry, and
//! must never record a second error for the same cause. Nothing here knows what a key means.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::ConfigError;
use super::KEY_HOMES;
use crate::openai::models::edit_distance;

/// Longest environment variable name accepted.
const MAX_ENV_NAME_BYTES: usize = 128;
/// Largest edit distance for which a "did you mean" is offered.
const MAX_SUGGESTION_DISTANCE: usize = 2;

/// One TOML table and the dotted path that names it in errors (`""` for the file itself).
pub(super) struct Section<'t> {
    path: String,
    table: &'t Table,
}

impl<'t> Section<'t> {
    pub(super) fn root(table: &'t Table) -> Section<'t> {
        Section { path: String::new(), table }
    }

    pub(super) fn new(path: String, table: &'t Table) -> Section<'t> {
        Section { path, table }
    }

    /// The dotted path of `key` in this table.
    pub(super) fn key(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_string() } else { format!("{}.{key}", self.path) }
    }

    pub(super) fn path(&self) -> &str {
        &self.path
    }

    pub(super) fn get(&self, key: &str) -> Option<&'t Value> {
        self.table.get(key)
    }

    pub(super) fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &'t String> + use<'t> {
        self.table.keys()
    }
}

/// Collects errors while the sections read their values.
pub(super) struct Reader {
    errors: Vec<ConfigError>,
}

impl Reader {
    pub(super) fn new() -> Reader {
        Reader { errors: Vec::new() }
    }

    pub(super) fn into_errors(self) -> Vec<ConfigError> {
        self.errors
    }

    pub(super) fn error(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError { key: key.into(), message: message.into() });
    }

    /// Records every key of `section` not in `known`, suggesting the closest known key, or the
    /// section where that key does belong.
    pub(super) fn check_keys(&mut self, section: &Section<'_>, known: &[&str]) {
        for key in section.keys() {
            if !known.contains(&key.as_str()) {
                let message = unknown_key_message(key, known);
                self.error(section.key(key), message);
            }
        }
    }

    /// `[path.key]`: a table, or an error saying how to write one.
    pub(super) fn table<'t>(&mut self, section: &Section<'t>, key: &str) -> Option<Section<'t>> {
        match section.get(key)? {
            Value::Table(table) => Some(Section::new(section.key(key), table)),
            other => {
                let path = section.key(key);
                self.error(&path, format!("must be a table (a [{path}] section), not {}", describe(other)));
                None
            }
        }
    }

    /// `[[key]]`: a list of tables, each named `key[index]`; `None` if absent or refused.
    pub(super) fn table_list<'t>(&mut self, section: &Section<'t>, key: &str) -> Option<Vec<Section<'t>>> {
        let path = section.key(key);
        let how = format!("a list of tables: write [[{path}]] above each entry");
        match section.get(key)? {
            Value::Array(items) => {
                let mut tables = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    match item {
                        Value::Table(table) => tables.push(Section::new(format!("{path}[{index}]"), table)),
                        other => {
                            self.error(format!("{path}[{index}]"), format!("must be a table, not {}", describe(other)))
                        }
                    }
                }
                Some(tables)
            }
            Value::Table(_) => {
                self.error(path, format!("must be {how} ([{key}] with single brackets makes one table)"));
                None
            }
            other => {
                self.error(path, format!("must be {how}, not {}", describe(other)));
                None
            }
        }
    }

    pub(super) fn string<'t>(&mut self, section: &Section<'t>, key: &str) -> Option<&'t str> {
        match section.get(key)? {
            Value::String(text) => Some(text),
            other => {
                self.error(section.key(key), format!("must be a string, not {}", describe(other)));
                None
            }
        }
    }

    /// A boolean, where present.
    pub(super) fn boolean(&mut self, section: &Section<'_>, key: &str) -> Option<bool> {
        match section.get(key)? {
            Value::Boolean(value) => Some(*value),
            other => {
                self.error(section.key(key), format!("must be true or false, not {}", describe(other)));
                None
            }
        }
    }

    /// A string that must be present.
    pub(super) fn required_string<'t>(&mut self, section: &Section<'t>, key: &str) -> Option<&'t str> {
        if !section.has(key) {
            self.error(section.key(key), "is required");
            return None;
        }
        self.string(section, key)
    }

    /// An integer within `range`; `suffix` explains the maximum when it is a built-in limit.
    pub(super) fn integer(
        &mut self,
        section: &Section<'_>,
        key: &str,
        range: RangeInclusive<u64>,
        suffix: &str,
    ) -> Option<u64> {
        let value = section.get(key)?;
        let Value::Integer(number) = value else {
            self.error(section.key(key), format!("must be an integer, not {}", describe(value)));
            return None;
        };
        match u64::try_from(*number) {
            Ok(number) if range.contains(&number) => Some(number),
            Ok(number) if number > *range.end() => {
                self.error(section.key(key), format!("{number} is too large: at most {}{suffix}", range.end()));
                None
            }
            _ => {
                self.error(section.key(key), format!("{number} is too small: at least {}", range.start()));
                None
            }
        }
    }

    /// A lowerable limit: from 1 to `max`, default `max`.
    pub(super) fn limit(&mut self, section: &Section<'_>, key: &str, max: u64) -> u64 {
        const WHY: &str = " (the built-in limit: configuration may lower it, never raise it)";
        self.integer(section, key, 1..=max, WHY).unwrap_or(max)
    }

    /// A decimal written as a string. Money never goes through a TOML number: a float cannot
    /// hold most decimals exactly, so numbers are refused with the quoted spelling to use.
    pub(super) fn decimal<'t>(&mut self, section: &Section<'t>, key: &str) -> Option<&'t str> {
        let quoted = match section.get(key)? {
            Value::String(text) => return Some(text),
            Value::Float(number) => format!("\"{number}\""),
            Value::Integer(number) => format!("\"{number}\""),
            other => {
                self.error(
                    section.key(key),
                    format!("must be a decimal string such as \"0.5\", not {}", describe(other)),
                );
                return None;
            }
        };
        self.error(
            section.key(key),
            format!(
                "money is written as a quoted decimal string, e.g. {key} = {quoted}; a TOML number is refused because a float cannot hold most decimal amounts exactly"
            ),
        );
        None
    }

    /// A list of strings; each element that is not a string is reported as `key[index]` and
    /// comes back as `None`, so the others keep their indices.
    pub(super) fn string_list<'t>(&mut self, section: &Section<'t>, key: &str) -> Option<Vec<Option<&'t str>>> {
        let value = section.get(key)?;
        let Value::Array(items) = value else {
            self.error(section.key(key), format!("must be a list of strings, not {}", describe(value)));
            return None;
        };
        let mut strings = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            match item {
                Value::String(text) => strings.push(Some(text.as_str())),
                other => {
                    self.error(
                        format!("{}[{index}]", section.key(key)),
                        format!("must be a string, not {}", describe(other)),
                    );
                    strings.push(None);
                }
            }
        }
        Some(strings)
    }

    /// A path to a file that exists now (relative paths are relative to the working directory).
    pub(super) fn existing_file(&mut self, section: &Section<'_>, key: &str) -> Option<PathBuf> {
        let text = self.string(section, key)?;
        if text.is_empty() {
            self.error(section.key(key), "must not be empty");
            return None;
        }
        let path = Path::new(text);
        match std::fs::metadata(path) {
            Ok(metadata) if metadata.is_file() => Some(path.to_path_buf()),
            Ok(_) => {
                self.error(section.key(key), format!("'{text}' is not a regular file"));
                None
            }
            Err(error) => {
                self.error(section.key(key), format!("'{text}' cannot be used: {error}"));
                None
            }
        }
    }

    /// The name of an environment variable (`[A-Za-z_][A-Za-z0-9_]*`); whether it is set is
    /// checked at start, not here.
    pub(super) fn env_name(&mut self, section: &Section<'_>, key: &str) -> Option<String> {
        let text = self.string(section, key)?;
        let mut bytes = text.bytes();
        let valid = text.len() <= MAX_ENV_NAME_BYTES
            && bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            self.error(
                section.key(key),
                format!(
                    "must name an environment variable (letters, digits and '_', not starting with a digit, at most {MAX_ENV_NAME_BYTES} bytes); put the secret itself in that variable, not in this file"
                ),
            );
            return None;
        }
        Some(text.to_string())
    }

    /// An IP socket address such as `0.0.0.0:8080` (host names are refused: listeners bind).
    pub(super) fn address(&mut self, section: &Section<'_>, key: &str) -> Option<SocketAddr> {
        let text = self.string(section, key)?;
        match text.parse() {
            Ok(address) => Some(address),
            Err(_) => {
                let hint = match text.rsplit_once(':') {
                    Some((host, port)) if port.parse::<u16>().is_ok() && !host.is_empty() => {
                        "; the host must be an IP address (0.0.0.0 for every interface, [::] for IPv6), not a name"
                    }
                    _ => "",
                };
                self.error(
                    section.key(key),
                    format!("'{text}' is not an IP address and port such as \"0.0.0.0:8080\"{hint}"),
                );
                None
            }
        }
    }
}

/// The message for an unknown key: the closest known key, else the section it belongs in,
/// else the list of known keys.
fn unknown_key_message(key: &str, known: &[&str]) -> String {
    if let Some(closest) = closest(key, known.iter().copied()) {
        return format!("unknown key (did you mean '{closest}'?)");
    }
    let homes: Vec<&str> = KEY_HOMES.iter().filter(|(_, keys)| keys.contains(&key)).map(|(home, _)| *home).collect();
    if !homes.is_empty() {
        return format!("unknown key here; it belongs in {}", homes.join(" or "));
    }
    format!("unknown key (expected one of: {})", known.join(", "))
}

/// The candidate nearest to `word` if it is close enough to be a likely typo.
pub(super) fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let lowered = word.to_ascii_lowercase();
    candidates
        .map(|candidate| (edit_distance(&lowered, &candidate.to_ascii_lowercase()), candidate))
        .filter(|&(distance, candidate)| distance <= MAX_SUGGESTION_DISTANCE && distance * 2 < candidate.len())
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// "an integer (5)", "a float (0.5)", "a table", ...: what was found instead.
fn describe(value: &Value) -> String {
    match value {
        Value::String(text) => format!("a string (\"{text}\")"),
        Value::Integer(number) => format!("an integer ({number})"),
        Value::Float(number) => format!("a float ({number})"),
        Value::Boolean(flag) => format!("a boolean ({flag})"),
        Value::Datetime(_) => "a date-time".into(),
        Value::Array(_) => "a list".into(),
        Value::Table(_) => "a table".into(),
    }
}
