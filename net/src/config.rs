//! Layered configuration.
//!
//! Every server describes its configuration once with [`layered_config!`]. The macro produces:
//! - the resolved configuration struct with its built-in defaults, and
//! - a *layer* struct whose fields are all optional, which is both a TOML table
//!   (`deny_unknown_fields`, kebab-case keys) and a set of clap flags with environment variables.
//!
//! Precedence is defaults < TOML file given by `--config` < environment variables < flags. clap
//! already ranks a flag above its environment variable, so the layering is: start from the
//! defaults, apply the file's layer, then apply the command line's layer.
//!
//! Each server then validates the resolved struct into its runtime configuration *before* binding
//! any socket; [`exit_invalid`] prints one line and exits with code 64.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::NetError;

/// A configuration layer: every field optional, applied over a lower layer.
pub trait Layer<C> {
    /// Overwrites the fields of `cfg` that this layer sets.
    fn apply_to(self, cfg: &mut C);
}

/// Declares a server configuration and its layer. See the module documentation.
///
/// Boolean switches take `#[arg(long, num_args = 0..=1, default_missing_value = "true")]` so that
/// `--flag` alone means true, while the TOML file still writes `flag = true`.
///
/// ```ignore
/// waypost_net::layered_config! {
///     /// The example server's configuration.
///     pub struct ExampleConfig / ExampleLayer {
///         /// Address to listen on.
///         #[arg(long, env = "WAYPOST_EXAMPLE_LISTEN")]
///         pub listen: std::net::SocketAddr = "127.0.0.1:8080".parse().expect("valid"),
///     }
/// }
/// ```
#[macro_export]
macro_rules! layered_config {
    (
        $(#[$smeta:meta])*
        pub struct $name:ident / $layer:ident {
            $(
                $(#[doc = $doc:literal])*
                #[arg($($argtt:tt)*)]
                pub $field:ident : $ty:ty = $default:expr,
            )*
        }
    ) => {
        $(#[$smeta])*
        #[derive(Clone, PartialEq)]
        pub struct $name {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }

        /// One layer of the configuration: a TOML table or the command line. Unset fields keep
        /// the value of the layer below.
        #[derive(Clone, Default, clap::Args, serde::Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        pub struct $layer {
            $( $(#[doc = $doc])* #[arg($($argtt)*)] pub $field: Option<$ty>, )*
        }

        impl $crate::config::Layer<$name> for $layer {
            fn apply_to(self, cfg: &mut $name) {
                $( if let Some(v) = self.$field { cfg.$field = v; } )*
            }
        }
    };
}

/// The command line every server shares: `--config`, `--check-config` and the server's own layer.
#[derive(Clone, clap::Parser)]
pub struct Cli<L: clap::Args> {
    /// A TOML configuration file. Its keys are the long flag names (kebab-case).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Validate the configuration, print "configuration ok" and exit (0 if valid, 64 if not).
    #[arg(long)]
    pub check_config: bool,
    /// Log level: off, error, warn (default), info, debug, trace. Debug and trace are compiled out
    /// of release builds.
    #[arg(long, env = "WAYPOST_LOG", value_name = "LEVEL")]
    pub log_level: Option<crate::logging::Level>,
    #[command(flatten)]
    pub layer: L,
}

/// Parses the process's command line. Help and version print and exit 0; any other error prints
/// one line and exits 64 (`EX_USAGE`), like an invalid configuration file.
pub fn parse_cli<L: clap::Args>(program: &str) -> Cli<L> {
    use clap::Parser;
    match Cli::<L>::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let msg = e.to_string();
            let first = msg
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            exit_invalid(program, &first.trim_start_matches("error: "))
        }
    }
}

/// Parses the command line, resolves the layers and validates the result with `validate`; exits
/// 64 with one line on any error, and 0 after printing "configuration ok" with `--check-config`.
/// Call it before binding anything.
pub fn load_or_exit<C, L, R, E>(
    program: &str,
    validate: impl FnOnce(C) -> Result<R, E>,
) -> (R, Option<crate::logging::Level>)
where
    C: Default,
    L: Layer<C> + clap::Args + for<'de> Deserialize<'de>,
    E: fmt::Display,
{
    let cli = parse_cli::<L>(program);
    let cfg = match resolve::<C, L>(cli.config.as_deref(), cli.layer) {
        Ok(c) => c,
        Err(e) => exit_invalid(program, &e),
    };
    let runtime = match validate(cfg) {
        Ok(r) => r,
        Err(e) => exit_invalid(program, &e),
    };
    if cli.check_config {
        exit_config_ok(program);
    }
    (runtime, cli.log_level)
}

/// Reads the TOML file at `path` into a layer, rejecting unknown keys.
pub fn read_layer<L: for<'de> Deserialize<'de>>(path: &Path) -> Result<L, NetError> {
    let text = std::fs::read_to_string(path).map_err(|e| NetError::ConfigRead(e.kind()))?;
    parse_layer(&text)
}

/// Parses TOML text into a layer, rejecting unknown keys.
///
/// The error names the line and what is wrong, but never quotes the file: toml's own rendering
/// shows the offending source line, which may hold a password or shared secret.
pub fn parse_layer<L: for<'de> Deserialize<'de>>(text: &str) -> Result<L, NetError> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map(|span| {
            let start = span.start.min(text.len());
            text.as_bytes()[..start]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1
        });
        let msg = one_line(e.message());
        NetError::ConfigParse(match line {
            Some(line) => format!("line {line}: {msg}"),
            None => msg,
        })
    })
}

/// Resolves defaults < file < command line (which includes the environment).
pub fn resolve<C: Default, L: Layer<C> + for<'de> Deserialize<'de>>(
    file: Option<&Path>,
    cli: L,
) -> Result<C, NetError> {
    let mut cfg = C::default();
    if let Some(path) = file {
        read_layer::<L>(path)?.apply_to(&mut cfg);
    }
    cli.apply_to(&mut cfg);
    Ok(cfg)
}

/// Prints `<program>: <error>` on one line to standard error and exits with code 64.
pub fn exit_invalid(program: &str, err: &dyn fmt::Display) -> ! {
    #[allow(clippy::print_stderr, clippy::disallowed_macros)]
    {
        eprintln!("{program}: {}", one_line(&err.to_string()));
    }
    std::process::exit(crate::EX_USAGE)
}

/// Prints "configuration ok" and exits 0; used by `--check-config`.
pub fn exit_config_ok(program: &str) -> ! {
    #[allow(clippy::print_stdout, clippy::disallowed_macros)]
    {
        println!("{program}: configuration ok");
    }
    std::process::exit(0)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Where the admin HTTP listener binds, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminAddr {
    /// No admin listener.
    Off,
    /// Bind here (loopback by default).
    At(SocketAddr),
}

impl AdminAddr {
    /// The socket address, if enabled.
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            Self::Off => None,
            Self::At(a) => Some(a),
        }
    }
}

impl FromStr for AdminAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "off" | "none" | "disabled" | "" => Ok(Self::Off),
            other => other
                .parse()
                .map(Self::At)
                .map_err(|_| "expected an address such as 127.0.0.1:9100, or off".to_owned()),
        }
    }
}

impl<'de> Deserialize<'de> for AdminAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for AdminAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::At(a) => write!(f, "{a}"),
        }
    }
}

/// Checks that an admin address is loopback unless `allow_public` is set.
pub fn check_admin_addr(addr: AdminAddr, allow_public: bool) -> Result<(), NetError> {
    match addr {
        AdminAddr::At(a) if !a.ip().is_loopback() && !allow_public => Err(NetError::Invalid(
            "admin-listen must be a loopback address unless admin-public is set".into(),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(unreachable_pub)]
mod tests {
    use clap::Parser;

    use super::*;

    crate::layered_config! {
        /// Test configuration.
        pub struct TestConfig / TestLayer {
            /// Listen address.
            #[arg(long)]
            pub listen: SocketAddr = "127.0.0.1:1000".parse().expect("valid"),
            /// A name.
            #[arg(long)]
            pub realm: String = "ring".to_owned(),
            /// Repeatable.
            #[arg(long = "user")]
            pub users: Vec<String> = vec!["ring:ring".to_owned()],
            /// Admin.
            #[arg(long)]
            pub admin_listen: AdminAddr = AdminAddr::Off,
        }
    }

    #[test]
    fn defaults_then_file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "realm = \"file\"\nlisten = \"127.0.0.1:2000\"\n").unwrap();
        let cli = Cli::<TestLayer>::try_parse_from(["x", "--listen", "127.0.0.1:3000"]).unwrap();
        let cfg: TestConfig = resolve(Some(&path), cli.layer).unwrap();
        assert_eq!(cfg.listen.port(), 3000, "flag beats file");
        assert_eq!(cfg.realm, "file", "file beats default");
        assert_eq!(cfg.users, vec!["ring:ring".to_owned()], "default kept");
        assert_eq!(cfg.admin_listen, AdminAddr::Off);
    }

    #[test]
    fn repeatable_flags_replace_the_default_list() {
        let cli =
            Cli::<TestLayer>::try_parse_from(["x", "--user", "a:b", "--user", "c:d"]).unwrap();
        let cfg: TestConfig = resolve(None, cli.layer).unwrap();
        assert_eq!(cfg.users, vec!["a:b".to_owned(), "c:d".to_owned()]);
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let err = parse_layer::<TestLayer>("realm = \"x\"\nbogus-key = 1\n")
            .err()
            .expect("unknown key must fail");
        let msg = err.to_string();
        assert!(msg.contains("bogus-key"), "{msg}");
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn parse_errors_give_the_line_but_never_quote_the_file() {
        let err = parse_layer::<TestLayer>("realm = \"ring\"\nrealm2 = \"s3cr3t-value\n")
            .err()
            .expect("unterminated string must fail")
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(
            !err.contains("s3cr3t-value"),
            "the error quotes the file: {err}"
        );
    }

    #[test]
    fn bad_value_type_is_rejected() {
        assert!(parse_layer::<TestLayer>("listen = \"not an address\"\n").is_err());
        assert!(parse_layer::<TestLayer>("admin-listen = \"nope\"\n").is_err());
        let ok: TestLayer = parse_layer("admin-listen = \"off\"\n").unwrap();
        assert_eq!(ok.admin_listen, Some(AdminAddr::Off));
    }

    #[test]
    fn admin_must_be_loopback_by_default() {
        let public = AdminAddr::At("0.0.0.0:9100".parse().unwrap());
        assert!(check_admin_addr(public, false).is_err());
        assert!(check_admin_addr(public, true).is_ok());
        assert!(check_admin_addr(AdminAddr::At("127.0.0.1:9".parse().unwrap()), false).is_ok());
    }
}
