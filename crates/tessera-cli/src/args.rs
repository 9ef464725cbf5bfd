//! A small command-line flag parser: `--name value`, `--name=value` and boolean `--name`, with
//! errors that name the flag and say what was expected.

use std::collections::HashMap;

pub struct Flags {
    values: HashMap<String, Vec<String>>,
    switches: Vec<String>,
    positional: Vec<String>,
}

impl Flags {
    /// Parses `args` given which flags take a value and which are switches; any other argument
    /// is an error.
    pub fn parse(args: &[String], with_value: &[&str], switches: &[&str]) -> Result<Flags, String> {
        Flags::parse_inner(args, with_value, switches, false)
    }

    /// As [`Flags::parse`], and arguments that are not flags (nor flag values) are kept as
    /// positionals, in order.
    pub fn parse_with_positionals(
        args: &[String],
        with_value: &[&str],
        switches: &[&str],
    ) -> Result<Flags, String> {
        Flags::parse_inner(args, with_value, switches, true)
    }

    fn parse_inner(
        args: &[String],
        with_value: &[&str],
        switches: &[&str],
        allow_positional: bool,
    ) -> Result<Flags, String> {
        let mut values: HashMap<String, Vec<String>> = HashMap::new();
        let mut on = Vec::new();
        let mut positional = Vec::new();
        let mut i = 0;
        while i < args.len() {
            let a = &args[i];
            let (name, inline) = match a.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
                _ => (a.as_str(), None),
            };
            if with_value.contains(&name) {
                let v = match inline {
                    Some(v) => v,
                    None => {
                        i += 1;
                        args.get(i)
                            .cloned()
                            .ok_or_else(|| format!("{name} needs a value"))?
                    }
                };
                values.entry(name.to_string()).or_default().push(v);
            } else if switches.contains(&name) && inline.is_none() {
                on.push(name.to_string());
            } else if allow_positional && !a.starts_with('-') {
                positional.push(a.clone());
            } else {
                return Err(format!("unknown flag '{a}'"));
            }
            i += 1;
        }
        Ok(Flags {
            values,
            switches: on,
            positional,
        })
    }

    /// The positional arguments (see [`Flags::parse_with_positionals`]).
    pub fn positionals(&self) -> &[String] {
        &self.positional
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }

    pub fn on(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }

    /// A parsed value, or `default` when the flag is absent.
    pub fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<T>()
                .map_err(|_| format!("{name}: '{v}' is not a valid number")),
        }
    }
}
