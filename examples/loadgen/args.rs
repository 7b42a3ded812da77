//! Command-line plumbing shared by the benchmark examples (readbench, mergebench, blockbytes).
//! Included with `#[path]`.

/// Errors of an example's run; a [`Usage`] among them means exit status 2.
pub type Error = Box<dyn std::error::Error>;

/// A command-line mistake (exit status 2).
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

pub fn usage(msg: impl Into<String>) -> Error {
    Box::new(Usage(msg.into()))
}

/// `(flag, value)` pairs from `--flag value` / `--flag=value`; `Ok(None)` after printing
/// `help` for `--help`. With a non-empty `known`, any other flag is refused.
#[allow(dead_code)] // blockbytes keeps its own map-based parser
pub fn flag_pairs(
    args: &[String],
    help: &str,
    known: &[&str],
) -> Result<Option<Vec<(String, String)>>, Error> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--help" || arg == "-h" {
            print!("{help}");
            return Ok(None);
        }
        if !arg.starts_with("--") {
            return Err(usage(format!("unexpected argument {arg:?} (see --help)")));
        }
        let name = arg.split_once('=').map_or(arg.as_str(), |(f, _)| f);
        if !known.is_empty() && !known.contains(&name) {
            return Err(usage(format!("unknown flag {name:?} (see --help)")));
        }
        let (flag, value) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), v.to_string()),
            None => {
                let v = it
                    .next()
                    .ok_or_else(|| usage(format!("{arg} needs a value")))?;
                (arg.clone(), v.clone())
            }
        };
        out.push((flag, value));
    }
    Ok(Some(out))
}

#[allow(dead_code)] // blockbytes parses its numbers itself
pub fn num<T: std::str::FromStr>(flag: &str, s: &str) -> Result<T, Error> {
    s.parse()
        .map_err(|_| usage(format!("{flag}: bad number {s:?}")))
}
