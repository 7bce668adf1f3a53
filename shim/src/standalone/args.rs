//! A small command-line parser for the standalone subcommands: `--name value`,
//! `--name=value`, `-x value`, boolean flags and positionals, with typed errors.

use super::errors::{CliError, CliResult};
use std::collections::HashMap;

/// One subcommand's accepted options.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Options that take a value, with their short aliases: `("--signal", Some("-s"))`.
    pub valued: &'static [(&'static str, Option<&'static str>)],
    /// Boolean flags, with their short aliases.
    pub flags: &'static [(&'static str, Option<&'static str>)],
}

/// Options every subcommand accepts.
pub const GLOBAL_VALUED: &[(&str, Option<&str>)] =
    &[("--depot", None), ("--runc", None), ("--runc-root", None)];

/// A parsed command line.
#[derive(Debug, Default)]
pub struct Parsed {
    values: HashMap<&'static str, String>,
    flags: Vec<&'static str>,
    /// Positional arguments, in order.
    pub positional: Vec<String>,
}

impl Parsed {
    /// The value of a valued option.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Whether a flag was given.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.contains(&name)
    }

    /// `wanted` positionals at least `min` of them; usage error otherwise.
    pub fn positionals(&self, min: usize, max: usize, usage: &str) -> CliResult<&[String]> {
        let n = self.positional.len();
        if n < min || n > max {
            return Err(CliError::Usage(format!(
                "expected {} argument(s), got {n}\nusage: {usage}",
                if min == max {
                    min.to_string()
                } else {
                    format!("{min} to {max}")
                }
            )));
        }
        Ok(&self.positional)
    }
}

/// Parses `args` (after the subcommand) against `spec` plus the global options.
pub fn parse(args: &[String], spec: Spec) -> CliResult<Parsed> {
    let mut out = Parsed::default();
    let find = |table: &'static [(&'static str, Option<&'static str>)], arg: &str| {
        table
            .iter()
            .find(|(long, short)| *long == arg || *short == Some(arg))
            .map(|(long, _)| *long)
    };
    let mut it = args.iter();
    let mut only_positional = false;
    while let Some(arg) = it.next() {
        if only_positional || !arg.starts_with('-') || arg == "-" {
            out.positional.push(arg.clone());
            continue;
        }
        if arg == "--" {
            only_positional = true;
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        if let Some(long) = find(spec.valued, name).or_else(|| find(GLOBAL_VALUED, name)) {
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| CliError::Usage(format!("option {name} needs a value")))?,
            };
            out.values.insert(long, value);
        } else if let Some(long) = find(spec.flags, name) {
            if inline.is_some() {
                return Err(CliError::Usage(format!("flag {name} takes no value")));
            }
            out.flags.push(long);
        } else {
            return Err(CliError::Usage(format!("unknown option {arg:?}")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    const SPEC: Spec = Spec {
        valued: &[("--signal", Some("-s"))],
        flags: &[("--all", Some("-a")), ("--json", None)],
    };

    #[test]
    fn parses_options_flags_and_positionals() {
        let p = parse(
            &v(&["-s", "9", "--depot=/d", "c1", "--all", "p1", "--json"]),
            SPEC,
        )
        .unwrap();
        assert_eq!(p.value("--signal"), Some("9"));
        assert_eq!(p.value("--depot"), Some("/d"));
        assert!(p.flag("--all") && p.flag("--json"));
        assert_eq!(p.positional, v(&["c1", "p1"]));
        assert!(p.positionals(1, 2, "u").is_ok());
        assert!(p.positionals(3, 3, "u").is_err());
    }

    #[test]
    fn rejects_bad_input() {
        assert!(parse(&v(&["--nope"]), SPEC).is_err());
        assert!(parse(&v(&["--signal"]), SPEC).is_err());
        assert!(parse(&v(&["--all=1"]), SPEC).is_err());
        let p = parse(&v(&["--", "--all"]), SPEC).unwrap();
        assert_eq!(p.positional, v(&["--all"]));
    }
}
