//! Which keys a service knows, so that a mistyped one stops the service at start instead of
//! being ignored. The known keys are those of the compiled-in defaults (every setting has
//! one), the secrets, and anything inside a table the defaults leave empty (a map whose keys
//! the user chooses).

use std::collections::BTreeSet;

use super::ConfigError;

#[derive(Debug, Default, Clone)]
pub struct KnownKeys {
    leaves: BTreeSet<String>,
    open_tables: BTreeSet<String>,
    /// Keys whose values are lists (given comma separated in the environment).
    lists: BTreeSet<String>,
}

impl KnownKeys {
    /// The keys of a defaults TOML document.
    pub fn from_defaults(toml_text: &str) -> Result<Self, ConfigError> {
        let table: toml::Table = toml_text
            .parse()
            .map_err(|e| ConfigError::key("(defaults)", format!("not valid TOML: {e}")))?;
        let mut keys = Self::default();
        keys.add_table("", &table);
        Ok(keys)
    }

    fn add_table(&mut self, prefix: &str, table: &toml::Table) {
        if table.is_empty() && !prefix.is_empty() {
            self.open_tables.insert(prefix.to_owned());
        }
        for (name, value) in table {
            let path = join(prefix, name);
            match value {
                toml::Value::Table(inner) => self.add_table(&path, inner),
                toml::Value::Array(_) => {
                    self.lists.insert(path.clone());
                    self.leaves.insert(path);
                }
                _ => {
                    self.leaves.insert(path);
                }
            }
        }
    }

    pub fn add_leaf(&mut self, path: &str) {
        self.leaves.insert(path.to_owned());
    }

    pub fn merge(&mut self, other: &KnownKeys) {
        self.leaves.extend(other.leaves.iter().cloned());
        self.open_tables.extend(other.open_tables.iter().cloned());
        self.lists.extend(other.lists.iter().cloned());
    }

    /// The keys whose values are lists.
    pub fn lists(&self) -> impl Iterator<Item = &str> {
        self.lists.iter().map(String::as_str)
    }

    fn is_leaf(&self, path: &str) -> bool {
        self.leaves.contains(path)
            || self
                .open_tables
                .iter()
                .any(|open| path.starts_with(&format!("{open}.")))
    }

    fn is_table(&self, path: &str) -> bool {
        let prefix = format!("{path}.");
        self.open_tables.contains(path) || self.leaves.iter().any(|leaf| leaf.starts_with(&prefix))
    }

    /// The known key closest to `path` by edit distance.
    pub fn nearest(&self, path: &str) -> Option<&str> {
        self.leaves
            .iter()
            .min_by_key(|known| strsim::levenshtein(known, path))
            .map(String::as_str)
    }

    fn unknown(&self, key: &str, origin: String) -> ConfigError {
        ConfigError::UnknownKey {
            key: key.to_owned(),
            origin,
            nearest: self.nearest(key).unwrap_or("(none)").to_owned(),
        }
    }

    /// Every key of a configuration file must be known.
    pub fn check_table(&self, table: &toml::Table, origin: &str) -> Result<(), ConfigError> {
        self.check_table_at("", table, origin)
    }

    fn check_table_at(
        &self,
        prefix: &str,
        table: &toml::Table,
        origin: &str,
    ) -> Result<(), ConfigError> {
        for (name, value) in table {
            let path = join(prefix, name);
            if self.is_leaf(&path) {
                continue;
            }
            match value {
                toml::Value::Table(inner) if self.is_table(&path) => {
                    self.check_table_at(&path, inner, origin)?;
                }
                _ => return Err(self.unknown(&path, origin.to_owned())),
            }
        }
        Ok(())
    }

    /// Every `<PREFIX>__A__B` variable must name a known key `a.b`.
    pub fn check_environment(
        &self,
        prefix: &str,
        variables: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        let start = format!("{prefix}__");
        for (name, _) in variables {
            let Some(rest) = name.strip_prefix(&start) else {
                continue;
            };
            let key = rest.to_lowercase().replace("__", ".");
            if !self.is_leaf(&key) {
                return Err(self.unknown(&key, format!("environment variable {name}")));
            }
        }
        Ok(())
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> KnownKeys {
        KnownKeys::from_defaults(
            "data_dir = \"x\"\n[bus]\npoll_interval_ms = 1\nretry_backoff_ms = [1]\n[bus.servicebus]\nnamespace = \"\"\n[columns]\n",
        )
        .unwrap()
    }

    #[test]
    fn a_mistyped_variable_names_the_nearest_key() {
        let error = keys()
            .check_environment(
                "ORDERS",
                [("ORDERS__BUS__POL_INTERVAL_MS".to_owned(), "5".to_owned())],
            )
            .unwrap_err()
            .to_string();
        assert!(error.contains("bus.pol_interval_ms"), "{error}");
        assert!(error.contains("bus.poll_interval_ms"), "{error}");
        assert!(error.contains("ORDERS__BUS__POL_INTERVAL_MS"), "{error}");
    }

    #[test]
    fn known_keys_lists_and_open_tables_pass() {
        let keys = keys();
        let file: toml::Table =
            "[bus]\nretry_backoff_ms = [1, 2]\n[bus.servicebus]\nnamespace = \"n\"\n[columns]\nsku = \"Artikel\"\n"
                .parse()
                .unwrap();
        keys.check_table(&file, "f.toml").unwrap();
        keys.check_environment(
            "X",
            [
                ("X__BUS__POLL_INTERVAL_MS".to_owned(), "1".to_owned()),
                ("X__COLUMNS__NAME".to_owned(), "Bezeichnung".to_owned()),
                ("OTHER__ANYTHING".to_owned(), "1".to_owned()),
            ],
        )
        .unwrap();
    }

    #[test]
    fn an_unknown_key_in_a_file_is_refused() {
        let file: toml::Table = "[bus.servicebus]\nnamspace = \"n\"\n".parse().unwrap();
        let error = keys().check_table(&file, "f.toml").unwrap_err().to_string();
        assert!(error.contains("bus.servicebus.namspace"), "{error}");
        assert!(error.contains("bus.servicebus.namespace"), "{error}");
        let file: toml::Table = "[htp]\nport = 1\n".parse().unwrap();
        assert!(keys().check_table(&file, "f.toml").is_err());
    }
}
