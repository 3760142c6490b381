//! Starting the `chainference-localnet` validator tool (built once by `cargo xtask localnet`)
//! and waiting until it serves: the one way the CLI's `chainference localnet` and xtask's test
//! stages start a real cluster.
//!
//! The tool writes one JSON line to `--ready-file` when its first slot is processed:
//! `{"rpc_url", "ws_url", "faucet", "program_id", "admin_keypair", "ledger"}`.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

/// Environment variable naming the validator tool's binary.
pub const LOCALNET_BIN_ENV: &str = "CHAINFERENCE_LOCALNET_BIN";

/// Where `cargo xtask localnet` installs the validator tool: `<tools>/bin/chainference-localnet`.
pub fn installed_tool_path() -> PathBuf {
    crate::tools_dir().join("bin/chainference-localnet")
}

/// The validator tool to run: `$CHAINFERENCE_LOCALNET_BIN`, else [`installed_tool_path`].
pub fn tool_path() -> PathBuf {
    std::env::var_os(LOCALNET_BIN_ENV).filter(|p| !p.is_empty()).map_or_else(installed_tool_path, PathBuf::from)
}

/// Why the validator did not come up.
#[derive(Debug)]
#[non_exhaustive]
pub enum LocalnetError {
    /// The tool is not built.
    NotBuilt(PathBuf),
    /// It could not be started, or its files could not be written.
    Io(String),
    /// It exited before it was ready.
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// Where its output went, if to a file.
        log: Option<PathBuf>,
    },
    /// It was not ready in time.
    NotReady {
        /// How long it was given.
        waited: Duration,
        /// Where its output went, if to a file.
        log: Option<PathBuf>,
    },
    /// The ready line lacks a field.
    BadReadyLine(String),
    /// An argument that takes a value was given without one.
    MissingValue(&'static str),
}

impl fmt::Display for LocalnetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let see = |log: &Option<PathBuf>| log.as_ref().map(|l| format!("; see {}", l.display())).unwrap_or_default();
        match self {
            Self::NotBuilt(path) => write!(
                f,
                "{} is not built yet: run `cargo xtask localnet` once (it builds the validator, ~20 min)",
                path.display()
            ),
            Self::Io(what) => f.write_str(what),
            Self::Exited { status, log } => {
                write!(f, "the validator exited with {status} before it was ready{}", see(log))
            }
            Self::NotReady { waited, log } => {
                write!(f, "the validator was not ready after {:.0} s{}", waited.as_secs_f64(), see(log))
            }
            Self::BadReadyLine(line) => write!(f, "the validator's ready line lacks rpc_url or admin_keypair: {line}"),
            Self::MissingValue(flag) => write!(f, "{flag} needs a value"),
        }
    }
}

impl std::error::Error for LocalnetError {}

/// How to start the validator.
#[derive(Clone, Debug)]
pub struct LocalnetOptions {
    /// The tool's binary (default [`tool_path`]).
    pub tool: PathBuf,
    /// The program `.so` to deploy (default [`crate::program_so`]).
    pub program: PathBuf,
    /// The ledger directory (default `<cache>/localnet-ledger`); ignored when `args` names one.
    pub ledger: PathBuf,
    /// Where the ready line goes (default: a file of this process in the cache); ignored when
    /// `args` names one.
    pub ready_file: PathBuf,
    /// More arguments for the tool (`--rpc-port 0`, `--quiet`, `--keep-ledger`, …).
    pub args: Vec<String>,
    /// Send the tool's output to this file (default: this process's stdout and stderr).
    pub log: Option<PathBuf>,
    /// How long to wait for the ready line.
    pub ready_timeout: Duration,
}

impl Default for LocalnetOptions {
    fn default() -> Self {
        let cache = crate::cache_dir();
        LocalnetOptions {
            tool: tool_path(),
            program: crate::program_so(),
            ledger: cache.join("localnet-ledger"),
            ready_file: cache.join(format!("localnet-ready-{}.json", std::process::id())),
            args: Vec::new(),
            log: None,
            ready_timeout: Duration::from_secs(180),
        }
    }
}

/// What the validator reported when it became ready.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadyInfo {
    /// JSON-RPC URL.
    pub rpc_url: String,
    /// Websocket pubsub URL, if reported.
    pub ws_url: Option<String>,
    /// The admin (upgrade authority) keypair file.
    pub admin_keypair: PathBuf,
    /// The ready line itself.
    pub line: String,
}

impl ReadyInfo {
    /// Reads the fields from the tool's ready line.
    pub fn parse(line: &str) -> Result<Self, LocalnetError> {
        let (Some(rpc_url), Some(admin)) = (json_string(line, "rpc_url"), json_string(line, "admin_keypair")) else {
            return Err(LocalnetError::BadReadyLine(line.trim().to_string()));
        };
        Ok(ReadyInfo {
            rpc_url,
            ws_url: json_string(line, "ws_url"),
            admin_keypair: PathBuf::from(admin),
            line: line.trim().to_string(),
        })
    }
}

/// A running validator; killed (and reaped) when dropped.
#[derive(Debug)]
pub struct Localnet {
    child: crate::process::KillOnDrop,
    /// What it reported when ready.
    pub ready: ReadyInfo,
}

impl LocalnetOptions {
    /// The tool's command line: `--program`, then `--ledger` and `--ready-file` unless `args`
    /// name them, then `args`; and the ready file it will write. The one rule both
    /// [`Localnet::start`] and a foreground run (`cargo xtask localnet`) use.
    pub fn command(&self) -> Result<(Command, PathBuf), LocalnetError> {
        let named = |flag: &'static str| -> Result<Option<&String>, LocalnetError> {
            match self.args.iter().position(|a| a == flag) {
                None => Ok(None),
                Some(i) => self.args.get(i.saturating_add(1)).map(Some).ok_or(LocalnetError::MissingValue(flag)),
            }
        };
        let named_ready_file = named("--ready-file")?;
        let ready_file = named_ready_file.map_or_else(|| self.ready_file.clone(), PathBuf::from);
        let mut command = Command::new(&self.tool);
        command.arg("--program").arg(&self.program);
        if named("--ledger")?.is_none() {
            command.arg("--ledger").arg(&self.ledger);
        }
        if named_ready_file.is_none() {
            command.arg("--ready-file").arg(&ready_file);
        }
        command.args(&self.args);
        Ok((command, ready_file))
    }
}

impl Localnet {
    /// Starts the tool and waits (blocking) until its ready line appears.
    pub fn start(options: LocalnetOptions) -> Result<Self, LocalnetError> {
        if !options.tool.is_file() {
            return Err(LocalnetError::NotBuilt(options.tool));
        }
        let (mut command, ready_file) = options.command()?;
        if let Some(parent) = ready_file.parent() {
            fs::create_dir_all(parent).map_err(|e| io_error(parent, &e))?;
        }
        let _ = fs::remove_file(&ready_file);
        if let Some(log) = &options.log {
            let out = fs::File::create(log).map_err(|e| io_error(log, &e))?;
            let err = out.try_clone().map_err(|e| io_error(log, &e))?;
            command.stdout(Stdio::from(out)).stderr(Stdio::from(err));
        }
        let child = command.spawn().map_err(|e| io_error(&options.tool, &e))?;
        let mut child = crate::process::KillOnDrop::new(child);
        // The tool writes the line to a `.partial` file and renames it, so a complete line with
        // its newline is all that can appear; the newline check guards other writers.
        let line = crate::process::wait_until(options.ready_timeout, Duration::from_millis(200), || {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(LocalnetError::Exited { status, log: options.log.clone() });
            }
            Ok(fs::read_to_string(&ready_file).ok().filter(|l| l.ends_with('\n')))
        })?
        .ok_or_else(|| LocalnetError::NotReady { waited: options.ready_timeout, log: options.log.clone() })?;
        Ok(Localnet { ready: ReadyInfo::parse(&line)?, child })
    }

    /// Whether it has exited, without waiting.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }
}

fn io_error(path: &Path, err: &std::io::Error) -> LocalnetError {
    LocalnetError::Io(format!("{}: {err}", path.display()))
}

/// The string value of the field `name` in one line of flat JSON (the tool's ready line): the
/// key must start a field (after `{` or `,`), and JSON's escapes are decoded.
fn json_string(line: &str, name: &str) -> Option<String> {
    let key = format!("\"{name}\"");
    let mut search = line;
    let after = loop {
        let at = search.find(&key)?;
        let (before, rest) = search.split_at(at);
        let rest = rest.get(key.len()..)?;
        let starts_field = matches!(before.trim_end().chars().last(), Some('{' | ','));
        match rest.trim_start().strip_prefix(':') {
            Some(value) if starts_field => break value,
            _ => search = rest,
        }
    };
    let mut chars = after.trim_start().strip_prefix('"')?.chars();
    let mut value = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                'r' => value.push('\r'),
                'b' => value.push('\u{8}'),
                'f' => value.push('\u{c}'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    let code = u32::from_str_radix(&hex, 16).ok()?;
                    // A surrogate pair's halves are not chars; the tool never writes them.
                    value.push(char::from_u32(code)?);
                }
                other => value.push(other), // `"`, `\\` and `/` stand for themselves
            },
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ready_line() {
        let line = r#"{"rpc_url":"http://127.0.0.1:8899","ws_url": "ws://127.0.0.1:8900","admin_keypair":"/tmp/a \"b\"/admin.json","ledger":"/x"}"#;
        let info = ReadyInfo::parse(line).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(info.rpc_url, "http://127.0.0.1:8899");
        assert_eq!(info.ws_url.as_deref(), Some("ws://127.0.0.1:8900"));
        assert_eq!(info.admin_keypair, PathBuf::from("/tmp/a \"b\"/admin.json"));
        assert!(matches!(ReadyInfo::parse(r#"{"rpc_url":"x"}"#), Err(LocalnetError::BadReadyLine(_))));
        // Escapes decoded; a key inside another field's value is not a field.
        let tricky = r#"{"ledger":"rpc_url","rpc_url":"http://h\u0041\/x","admin_keypair":"a\nb"}"#;
        let info = ReadyInfo::parse(tricky).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(info.rpc_url, "http://hA/x");
        assert_eq!(info.admin_keypair, PathBuf::from("a\nb"));
    }

    #[test]
    fn the_command_line_keeps_what_the_caller_named() {
        let options = LocalnetOptions {
            tool: PathBuf::from("/bin/tool"),
            program: PathBuf::from("p.so"),
            ledger: PathBuf::from("L"),
            ready_file: PathBuf::from("R"),
            args: vec!["--ready-file".into(), "mine.json".into(), "--quiet".into()],
            ..LocalnetOptions::default()
        };
        let (command, ready) = options.command().unwrap_or_else(|e| panic!("{e}"));
        let args: Vec<String> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args, ["--program", "p.so", "--ledger", "L", "--ready-file", "mine.json", "--quiet"]);
        assert_eq!(ready, PathBuf::from("mine.json"));
        let dangling = LocalnetOptions { args: vec!["--ledger".into()], ..options };
        assert!(matches!(dangling.command(), Err(LocalnetError::MissingValue("--ledger"))));
    }

    #[test]
    fn a_missing_tool_says_how_to_build_it() {
        let options =
            LocalnetOptions { tool: PathBuf::from("/nonexistent/chainference-localnet"), ..LocalnetOptions::default() };
        let err = Localnet::start(options).map(|_| ()).err();
        assert!(matches!(&err, Some(LocalnetError::NotBuilt(_))), "{err:?}");
        assert!(err.is_some_and(|e| e.to_string().contains("cargo xtask localnet")));
    }
}
