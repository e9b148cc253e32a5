//! The command line: `node-client <service> <command>`. Add a variant to [`Service`] for a new
//! service (`dht`, `turn`, ...).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde_json::json;
use waypost_protocol::identity::KeyBits;
use waypost_protocol::names;

use crate::name::{Lookup, NameClient, Registration, Reverse, load_or_generate_identity};
use crate::output;

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: the server answered, but not with success (taken, refused, invalid).
pub const EXIT_REFUSED: i32 = 1;
/// Exit code: not found.
pub const EXIT_NOT_FOUND: i32 = 2;
/// Exit code: transport or server error.
pub const EXIT_ERROR: i32 = 3;

/// Waypost reference client.
#[derive(Debug, Parser)]
#[command(
    name = "node-client",
    version,
    about,
    after_help = "Examples (local suite from scripts/start.sh):\n  \
        node-client name register --server http://127.0.0.1:8081 --identity alice.pem alice\n  \
        node-client dht put --proxy http://127.0.0.1:8080 hello 'hi there'\n  \
        node-client dht get --bootstrap 127.0.0.1:4222 --bind 127.0.0.1:0 hello\n  \
        node-client push listen --proxy http://127.0.0.1:8080 inbox:<jami id> --fetch\n  \
        node-client turn allocate --server 127.0.0.1:3478 --transport tcp --tcp-relay\n\n\
        Guide: docs/node-client.md"
)]
pub struct Cli {
    /// Print results as JSON (one object per line) instead of human-readable text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The service to talk to.
    #[command(subcommand)]
    pub service: Service,
}

/// Services.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum Service {
    /// Jami name server: register, lookup, reverse.
    #[command(subcommand)]
    Name(NameCommand),
    /// TURN relay: allocate over UDP/TCP/TLS, permissions, channels, RFC 6062, send data.
    #[command(subcommand)]
    Turn(crate::turn_cli::TurnCommand),
    /// DHT: get, put, listen as a UDP node (--bootstrap) or through a proxy (--proxy).
    #[command(subcommand)]
    Dht(crate::dht_cli::DhtCommand),
    /// Push: be a phone (local push receiver + SUBSCRIBE through a proxy), or only receive.
    #[command(subcommand)]
    Push(crate::dht_cli::PushCommand),
    /// Identity: create or show an RSA identity and its Jami ID.
    #[command(subcommand)]
    Identity(crate::dht_cli::IdentityCommand),
}

/// `node-client name ...`
#[derive(Debug, Subcommand)]
pub enum NameCommand {
    /// Register NAME for the identity in --identity (generated as RSA-4096 if the file is absent).
    Register {
        /// Name server base URL (as in the Jami account's RingNS.uri).
        #[arg(
            long,
            env = "WAYPOST_NAME_SERVER",
            default_value = "https://ns.jami.net"
        )]
        server: String,
        /// PEM private key file (PKCS#8 or PKCS#1); created if missing.
        #[arg(long, value_name = "FILE")]
        identity: PathBuf,
        /// Key size when generating: 2048, 3072 or 4096.
        #[arg(long, default_value_t = 4096)]
        bits: u32,
        /// Owner (Ethereum address, 40 hex); random if omitted.
        #[arg(long)]
        owner: Option<String>,
        /// The name to register (lowercased before signing).
        name: String,
    },
    /// Look NAME up and verify the returned key and signature.
    Lookup {
        /// Name server base URL.
        #[arg(
            long,
            env = "WAYPOST_NAME_SERVER",
            default_value = "https://ns.jami.net"
        )]
        server: String,
        /// The name.
        name: String,
    },
    /// Find the name registered for a Jami ID.
    Reverse {
        /// Name server base URL.
        #[arg(
            long,
            env = "WAYPOST_NAME_SERVER",
            default_value = "https://ns.jami.net"
        )]
        server: String,
        /// The Jami ID (40 hex, optional 0x/ring:/jami: prefix).
        addr: String,
    },
}

/// Runs the parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    output::set_json(cli.json);
    let result = match cli.service {
        Service::Name(cmd) => {
            return match run_name(cmd).await {
                Ok(code) => code,
                Err(e) => {
                    output::error("node-client", &e);
                    EXIT_ERROR
                }
            };
        }
        Service::Turn(cmd) => {
            return match crate::turn_cli::run(cmd).await {
                Ok(code) => code,
                Err(e) => {
                    output::error("node-client", &e);
                    EXIT_ERROR
                }
            };
        }
        Service::Dht(cmd) => crate::dht_cli::run_dht(cmd).await,
        Service::Push(cmd) => crate::dht_cli::run_push(cmd).await,
        Service::Identity(cmd) => crate::dht_cli::run_identity(cmd).await,
    };
    match result {
        Ok(code) => code,
        Err(crate::dht_cli::DhtCliError::Usage(m)) => {
            output::error("node-client", &m);
            waypost_net::EX_USAGE
        }
        Err(e) => {
            output::error("node-client", &e);
            EXIT_ERROR
        }
    }
}

async fn run_name(cmd: NameCommand) -> Result<i32, crate::name::NameClientError> {
    match cmd {
        NameCommand::Register {
            server,
            identity,
            bits,
            owner,
            name,
        } => {
            let bits = match bits {
                2048 => KeyBits::Rsa2048,
                3072 => KeyBits::Rsa3072,
                4096 => KeyBits::Rsa4096,
                _ => {
                    output::error("node-client", &"--bits must be 2048, 3072 or 4096");
                    return Ok(waypost_net::EX_USAGE);
                }
            };
            let owner = match owner {
                Some(o) => Some(
                    names::parse_address(&o)
                        .map_err(|_| crate::name::NameClientError::InvalidAddress)?,
                ),
                None => None,
            };
            let client = NameClient::new(&server)?;
            if !identity.exists() {
                output::progress("generating the RSA identity (a few seconds for RSA-4096)");
            }
            let (id, generated) = load_or_generate_identity(&identity, bits)?;
            let outcome = client.register(&id, &name, owner).await?;
            let (status, code) = match &outcome {
                Registration::Success => ("success", EXIT_OK),
                Registration::IncompleteRequest(_) => ("incomplete request", EXIT_REFUSED),
                Registration::SignatureVerificationFailed(_) => {
                    ("signature verification failed", EXIT_REFUSED)
                }
                Registration::AlreadyTaken(_) => ("already taken", EXIT_REFUSED),
                Registration::Error(_) => ("error", EXIT_ERROR),
            };
            let detail = match &outcome {
                Registration::IncompleteRequest(e)
                | Registration::SignatureVerificationFailed(e) => e.clone(),
                Registration::AlreadyTaken(s) | Registration::Error(s) => format!("http {s}"),
                Registration::Success => String::new(),
            };
            output::result(&json!({
                "status": status,
                "detail": detail,
                "name": name.to_ascii_lowercase(),
                "addr": names::format_address(&id.id()),
                "identity_generated": generated,
            }));
            Ok(code)
        }
        NameCommand::Lookup { server, name } => {
            let client = NameClient::new(&server)?;
            Ok(match client.lookup(&name).await? {
                Lookup::Found {
                    name,
                    addr,
                    verified,
                } => {
                    output::result(
                        &json!({"status": "found", "name": name, "addr": addr, "verified": verified}),
                    );
                    EXIT_OK
                }
                Lookup::NotFound => {
                    output::result(&json!({"status": "not found"}));
                    EXIT_NOT_FOUND
                }
                Lookup::InvalidResponse => {
                    output::result(&json!({"status": "invalid"}));
                    EXIT_REFUSED
                }
                Lookup::Error(s) => {
                    output::result(&json!({"status": "error", "detail": format!("http {s}")}));
                    EXIT_ERROR
                }
            })
        }
        NameCommand::Reverse { server, addr } => {
            let client = NameClient::new(&server)?;
            Ok(match client.reverse(&addr).await? {
                Reverse::Found(name) => {
                    output::result(&json!({"status": "found", "name": name}));
                    EXIT_OK
                }
                Reverse::NotFound => {
                    output::result(&json!({"status": "not found"}));
                    EXIT_NOT_FOUND
                }
                Reverse::InvalidResponse => {
                    output::result(&json!({"status": "invalid"}));
                    EXIT_REFUSED
                }
                Reverse::Error(s) => {
                    output::result(&json!({"status": "error", "detail": format!("http {s}")}));
                    EXIT_ERROR
                }
            })
        }
    }
}
