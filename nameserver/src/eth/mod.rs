//! The Ethereum backend (feature `eth`): a [`NameStore`] over a registrar contract exposing the
//! Jami `GlobalRegistrar` ABI (spec nameserver.md §3), through alloy.
//!
//! - Lookups are `eth_call`s of `addr`, `owner`, `publickey`, `signature` (forward) and `name`
//!   (reverse), behind a bounded cache: registered answers are kept forever (a registration never
//!   changes through the API), "not registered" answers only for `eth-negative-cache-ms`.
//! - A claim re-reads both directions on chain (never from the negative cache), then sends
//!   `reserveFor` from the configured account, waits for the receipt (and the configured number
//!   of confirmations) and decides from the receipt's `PrimaryChanged` event: `reserveFor` does
//!   not revert on conflicts. Without the event the chain is read again to tell "taken" from
//!   "failed". Claims are serialised in one lock (the chain takes one at a time anyway), which
//!   also keeps nonces in order.
//! - Transactions are legacy (`gasPrice`, EIP-155) when the chain's latest block has no base fee,
//!   as on the Jami chain; EIP-1559 otherwise.
//! - Every chain failure becomes [`StoreError::Unavailable`] (HTTP 503): a name is never
//!   reported free because the chain could not be read. Reads are retried with backoff within
//!   a budget below the request timeout; a sent transaction is never re-sent blindly (the chain
//!   is read instead).
//!
//! The store is synchronous like every [`NameStore`]: each call runs its async chain calls with
//! `Handle::block_on` on the runtime captured at [`EthStore::open`], so it must be called from
//! a blocking thread (the API calls stores from `spawn_blocking`), never from async code.
//!
//! Nothing here logs a name, an address, a key or the RPC URL: log lines are static strings with
//! an `error.kind`.

mod cache;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use alloy::consensus::BlockHeader as _;
use alloy::eips::BlockNumberOrTag;
use alloy::eips::eip2718::Encodable2718 as _;
use alloy::network::{
    EthereumWallet, NetworkTransactionBuilder as _, ReceiptResponse as _, TransactionBuilder as _,
};
use alloy::primitives::{Address, B256, Bytes};
use alloy::providers::{Provider as _, RootProvider};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolEvent as _};
use parking_lot::Mutex;
use tokio::runtime::Handle;
use waypost_protocol::identity::JamiId;

use crate::config::{KeySource, Settings};
use crate::store::{Claim, NameStore, Record, StoreError};
use cache::{Cached, LookupCache};

alloy::sol! {
    /// The part of the `GlobalRegistrar` ABI the bridge uses (spec nameserver.md §3.1).
    interface IRegistrar {
        function reserveFor(bytes32 name, address owner, address a, string publickey, string signedname) external;
        function addr(bytes32 name) external view returns (address);
        function name(address a) external view returns (bytes32);
        function owner(bytes32 name) external view returns (address);
        function publickey(bytes32 name) external view returns (string);
        function signature(bytes32 name) external view returns (string);
        event Changed(bytes32 indexed name);
        event PrimaryChanged(bytes32 indexed name, address indexed addr, address owner);
    }
}

/// Creation bytecode (hex) of the project's registrar, built from `contract/Registrar.sol`.
pub const REGISTRAR_BIN: &str = include_str!("../../contract/Registrar.bin");

/// The sender key could not be loaded. Messages never contain the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read.
    #[error("cannot read eth-key-file")]
    Read,
    /// The environment variable named by `eth-key-env` is not set.
    #[error("the environment variable named by eth-key-env is not set")]
    EnvMissing,
    /// Not 32 bytes of hex, or not a valid secp256k1 scalar.
    #[error("the Ethereum sender key is not a valid 32-byte hex private key")]
    Invalid,
}

/// A chain failure. Static messages: no name, address, key or URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The RPC URL is not usable.
    #[error("invalid RPC URL")]
    Url,
    /// The node answered with an error or could not be reached.
    #[error("ethereum RPC call failed")]
    Rpc,
    /// No answer within the time allowed.
    #[error("ethereum RPC call timed out")]
    Timeout,
    /// The contract's answer could not be decoded (e.g. no contract at the address).
    #[error("unexpected answer from the registrar contract")]
    Decode,
    /// The node serves another chain than configured.
    #[error("the node serves another chain id than configured")]
    ChainId,
    /// No code at the configured contract address.
    #[error("no registrar contract at the configured address")]
    NoContract,
    /// The transaction could not be built or signed.
    #[error("cannot build or sign the transaction")]
    Sign,
    /// The transaction was not mined (with its confirmations) in time.
    #[error("transaction not mined in time")]
    NotMined,
    /// A transaction was mined but failed.
    #[error("transaction failed")]
    Reverted,
}

impl ChainError {
    /// A short static kind for log fields.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Url => "url",
            Self::Rpc => "rpc",
            Self::Timeout => "timeout",
            Self::Decode => "decode",
            Self::ChainId => "chain_id",
            Self::NoContract => "no_contract",
            Self::Sign => "sign",
            Self::NotMined => "not_mined",
            Self::Reverted => "reverted",
        }
    }
}

/// Loads the sender key from its configured source.
pub fn load_key(source: &KeySource) -> Result<PrivateKeySigner, KeyError> {
    let text = match source {
        KeySource::File(path) => std::fs::read_to_string(path).map_err(|_| KeyError::Read)?,
        KeySource::Env(var) => std::env::var(var).map_err(|_| KeyError::EnvMissing)?,
    };
    parse_key(&text)
}

/// Parses a hex private key (`0x` optional, surrounding whitespace ignored).
pub fn parse_key(text: &str) -> Result<PrivateKeySigner, KeyError> {
    let t = text.trim();
    let t = t.strip_prefix("0x").unwrap_or(t);
    let mut bytes = [0u8; 32];
    if t.len() != 64 || hex::decode_to_slice(t, &mut bytes).is_err() {
        return Err(KeyError::Invalid);
    }
    let key = PrivateKeySigner::from_slice(&bytes).map_err(|_| KeyError::Invalid);
    bytes.fill(0);
    key
}

/// A name as `bytes32`: its UTF-8 bytes right-padded with zeros. `None` if empty or longer
/// than 32 bytes (such a name cannot be on chain).
pub fn name32(name: &str) -> Option<B256> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > 32 {
        return None;
    }
    let mut out = [0u8; 32];
    out[..b.len()].copy_from_slice(b);
    Some(B256::from(out))
}

/// The name in a `bytes32` (trailing zeros stripped); `Ok(None)` for zero, `Err` if not UTF-8.
fn decode_name32(v: B256) -> Result<Option<String>, StoreError> {
    let bytes = v.as_slice();
    let len = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    if len == 0 {
        return Ok(None);
    }
    String::from_utf8(bytes[..len].to_vec())
        .map(Some)
        .map_err(|_| StoreError::Corrupt)
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// A JSON-RPC client with a sender account: reads, transactions, deployment.
pub struct Chain {
    provider: RootProvider,
    wallet: EthereumWallet,
    sender: Address,
    chain_id: u64,
    rpc_timeout: Duration,
}

impl Chain {
    /// A client of the node at `rpc_url` (http or https), signing with `key` for `chain_id`.
    /// Makes no request yet.
    pub fn new(
        rpc_url: &str,
        key: PrivateKeySigner,
        chain_id: u64,
        rpc_timeout: Duration,
    ) -> Result<Self, ChainError> {
        let url = rpc_url
            .parse::<alloy::transports::http::reqwest::Url>()
            .map_err(|_| ChainError::Url)?;
        let sender = key.address();
        Ok(Self {
            provider: RootProvider::new_http(url),
            wallet: EthereumWallet::from(key),
            sender,
            chain_id,
            rpc_timeout,
        })
    }

    /// The sending account.
    pub fn sender(&self) -> Address {
        self.sender
    }

    /// Replaces the chain id used for signing.
    pub fn set_chain_id(&mut self, chain_id: u64) {
        self.chain_id = chain_id;
    }

    /// Runs one RPC call under the per-call timeout and the deadline.
    async fn within<T, E>(
        &self,
        deadline: Instant,
        f: impl Future<Output = Result<T, E>>,
    ) -> Result<T, ChainError> {
        let left = remaining(deadline).min(self.rpc_timeout);
        if left.is_zero() {
            return Err(ChainError::Timeout);
        }
        match tokio::time::timeout(left, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(ChainError::Rpc),
            Err(_) => Err(ChainError::Timeout),
        }
    }

    /// Retries a safe (read-only) operation with backoff until it succeeds, fails for a reason
    /// a retry cannot fix, or the deadline comes.
    async fn retry<T, Fut: Future<Output = Result<T, ChainError>>>(
        deadline: Instant,
        mut f: impl FnMut() -> Fut,
    ) -> Result<T, ChainError> {
        let mut delay = Duration::from_millis(50);
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e @ (ChainError::Decode | ChainError::ChainId | ChainError::NoContract)) => {
                    return Err(e);
                }
                Err(e) => {
                    if remaining(deadline) <= delay {
                        return Err(e);
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 3).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// The chain id the node reports.
    pub async fn node_chain_id(&self, deadline: Instant) -> Result<u64, ChainError> {
        Self::retry(deadline, || {
            self.within(deadline, self.provider.get_chain_id().into_future())
        })
        .await
    }

    /// Checks that the node serves the configured chain and that `contract` has code.
    pub async fn check(&self, contract: Address, deadline: Instant) -> Result<(), ChainError> {
        if self.node_chain_id(deadline).await? != self.chain_id {
            return Err(ChainError::ChainId);
        }
        let code = Self::retry(deadline, || {
            self.within(
                deadline,
                self.provider.get_code_at(contract).latest().into_future(),
            )
        })
        .await?;
        if code.is_empty() {
            return Err(ChainError::NoContract);
        }
        Ok(())
    }

    /// One `eth_call` of `call` on `to` at the latest block, retried while safe.
    pub async fn call<C: SolCall>(
        &self,
        to: Address,
        call: &C,
        deadline: Instant,
    ) -> Result<C::Return, ChainError> {
        let input = Bytes::from(call.abi_encode());
        let out = Self::retry(deadline, || {
            let tx = TransactionRequest::default()
                .with_to(to)
                .with_input(input.clone());
            // Mined state only: some nodes (anvil) answer from the pending block by default.
            self.within(deadline, self.provider.call(tx).latest().into_future())
        })
        .await?;
        C::abi_decode_returns(&out).map_err(|_| ChainError::Decode)
    }

    /// Signs and sends a transaction (`to = None` deploys `input`), then waits until it is
    /// mined with `confirmations` blocks. Legacy (gasPrice) when the latest block has no base
    /// fee. The send itself is not retried.
    pub async fn send(
        &self,
        to: Option<Address>,
        input: Bytes,
        confirmations: u64,
        deadline: Instant,
    ) -> Result<TransactionReceipt, ChainError> {
        let nonce = Self::retry(deadline, || {
            self.within(
                deadline,
                self.provider
                    .get_transaction_count(self.sender)
                    .pending()
                    .into_future(),
            )
        })
        .await?;
        let latest = Self::retry(deadline, || {
            self.within(
                deadline,
                self.provider
                    .get_block_by_number(BlockNumberOrTag::Latest)
                    .into_future(),
            )
        })
        .await?
        .ok_or(ChainError::Rpc)?;
        let mut tx = TransactionRequest::default()
            .with_from(self.sender)
            .with_input(input)
            .with_nonce(nonce)
            .with_chain_id(self.chain_id);
        tx = match to {
            Some(a) => tx.with_to(a),
            None => tx.into_create(),
        };
        if latest.header.base_fee_per_gas().is_none() {
            let price = Self::retry(deadline, || {
                self.within(deadline, self.provider.get_gas_price().into_future())
            })
            .await?;
            tx = tx.with_gas_price(price);
        } else {
            let fees = self
                .within(deadline, self.provider.estimate_eip1559_fees())
                .await?;
            tx = tx
                .with_max_fee_per_gas(fees.max_fee_per_gas)
                .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
        }
        let estimate = Self::retry(deadline, || {
            self.within(
                deadline,
                self.provider.estimate_gas(tx.clone()).into_future(),
            )
        })
        .await?;
        let limit = latest.header.gas_limit();
        let gas = estimate
            .saturating_add(estimate / 4)
            .saturating_add(10_000)
            .min(limit.max(estimate));
        let envelope = tx
            .with_gas_limit(gas)
            .build(&self.wallet)
            .await
            .map_err(|_| ChainError::Sign)?;
        let raw = envelope.encoded_2718();
        let hash = *self
            .within(deadline, self.provider.send_raw_transaction(&raw))
            .await?
            .tx_hash();
        self.wait_mined(hash, confirmations, deadline).await
    }

    async fn wait_mined(
        &self,
        hash: B256,
        confirmations: u64,
        deadline: Instant,
    ) -> Result<TransactionReceipt, ChainError> {
        let mut delay = Duration::from_millis(20);
        let mut receipt: Option<TransactionReceipt> = None;
        loop {
            if receipt.is_none()
                && let Ok(Some(r)) = self
                    .within(
                        deadline,
                        self.provider.get_transaction_receipt(hash).into_future(),
                    )
                    .await
            {
                receipt = Some(r);
            }
            if let Some(r) = &receipt {
                let mined_in = r.block_number().unwrap_or(u64::MAX);
                if confirmations <= 1 {
                    return Ok(r.clone());
                }
                if let Ok(head) = self
                    .within(deadline, self.provider.get_block_number().into_future())
                    .await
                    && head.saturating_add(1) >= mined_in.saturating_add(confirmations)
                {
                    return Ok(r.clone());
                }
            }
            if remaining(deadline) <= delay {
                return Err(ChainError::NotMined);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    /// Deploys the project's registrar contract and returns its address.
    pub async fn deploy_registrar(&self, deadline: Instant) -> Result<Address, ChainError> {
        let code = hex::decode(REGISTRAR_BIN.trim()).map_err(|_| ChainError::Sign)?;
        let receipt = self.send(None, code.into(), 1, deadline).await?;
        if !receipt.status() {
            return Err(ChainError::Reverted);
        }
        receipt.contract_address().ok_or(ChainError::Reverted)
    }

    /// Sends `reserveFor` for `record` to `contract` and reports whether the receipt carries
    /// the matching `PrimaryChanged` event (the only proof of a registration).
    pub async fn reserve_for(
        &self,
        contract: Address,
        record: &Record,
        confirmations: u64,
        deadline: Instant,
    ) -> Result<bool, ChainError> {
        let name = name32(&record.name).ok_or(ChainError::Sign)?;
        let call = IRegistrar::reserveForCall {
            name,
            owner: Address::from(record.owner),
            a: Address::from(record.addr),
            publickey: record.publickey.clone(),
            signedname: record.signature.clone(),
        };
        let receipt = self
            .send(
                Some(contract),
                call.abi_encode().into(),
                confirmations,
                deadline,
            )
            .await?;
        Ok(receipt.status() && registered_in(&receipt, contract, name, record.addr))
    }
}

/// Whether `receipt` holds the contract's `PrimaryChanged(name, addr, _)` event.
fn registered_in(
    receipt: &TransactionReceipt,
    contract: Address,
    name: B256,
    addr: [u8; 20],
) -> bool {
    let addr_topic = Address::from(addr).into_word();
    receipt.logs().iter().any(|log| {
        let topics = log.topics();
        log.address() == contract
            && topics.len() == 3
            && topics[0] == IRegistrar::PrimaryChanged::SIGNATURE_HASH
            && topics[1] == name
            && topics[2] == addr_topic
    })
}

/// The [`NameStore`] backed by a registrar contract. See the module documentation.
pub struct EthStore {
    rt: Handle,
    chain: Chain,
    contract: Address,
    confirmations: u64,
    tx_timeout: Duration,
    read_budget: Duration,
    claim_budget: Duration,
    cache: Mutex<LookupCache>,
    claims: Mutex<()>,
    verified: AtomicBool,
}

impl EthStore {
    /// Builds the store from validated settings (`store = ethereum`); `rt` runs the chain
    /// calls. Loads the key; makes no network request (the chain is checked on first use, so
    /// the server starts, and answers 503, while the node is down).
    pub fn open(settings: &Settings, rt: Handle) -> Result<Self, StoreError> {
        let eth = settings.eth.as_ref().ok_or(StoreError::Open)?;
        let key = load_key(&eth.key).map_err(|_| StoreError::Open)?;
        let chain = Chain::new(&eth.rpc_url, key, eth.chain_id, eth.rpc_timeout)
            .map_err(|_| StoreError::Open)?;
        // Answer before the HTTP request timeout (which would be a 4xx to the client).
        let budget = settings.request_timeout.mul_f64(0.8);
        Ok(Self {
            rt,
            chain,
            contract: Address::from(eth.contract),
            confirmations: eth.confirmations,
            tx_timeout: eth.tx_timeout,
            read_budget: settings.request_timeout.mul_f64(0.6),
            claim_budget: budget,
            cache: Mutex::new(LookupCache::new(eth.cache_entries, eth.negative_ttl)),
            claims: Mutex::new(()),
            verified: AtomicBool::new(false),
        })
    }

    /// The sending account's address.
    pub fn sender(&self) -> Address {
        self.chain.sender()
    }

    async fn ensure_verified(&self, deadline: Instant) -> Result<(), StoreError> {
        if self.verified.load(Ordering::Acquire) {
            return Ok(());
        }
        match self.chain.check(self.contract, deadline).await {
            Ok(()) => {
                self.verified.store(true, Ordering::Release);
                Ok(())
            }
            Err(e) => Err(chain_failure(e)),
        }
    }

    async fn read_record(
        &self,
        name: &str,
        deadline: Instant,
    ) -> Result<Option<Record>, StoreError> {
        let Some(n) = name32(name) else {
            return Ok(None);
        };
        let c = self.contract;
        let addr = self
            .chain
            .call(c, &IRegistrar::addrCall { name: n }, deadline)
            .await
            .map_err(chain_failure)?;
        if addr == Address::ZERO {
            return Ok(None);
        }
        let (owner_call, pk_call, sig_call) = (
            IRegistrar::ownerCall { name: n },
            IRegistrar::publickeyCall { name: n },
            IRegistrar::signatureCall { name: n },
        );
        let (owner, publickey, signature) = tokio::try_join!(
            self.chain.call(c, &owner_call, deadline),
            self.chain.call(c, &pk_call, deadline),
            self.chain.call(c, &sig_call, deadline),
        )
        .map_err(chain_failure)?;
        Ok(Some(Record {
            name: name.to_owned(),
            addr: addr.into_array(),
            owner: owner.into_array(),
            publickey,
            signature,
        }))
    }

    async fn read_name_of(
        &self,
        addr: [u8; 20],
        deadline: Instant,
    ) -> Result<Option<String>, StoreError> {
        let v = self
            .chain
            .call(
                self.contract,
                &IRegistrar::nameCall {
                    a: Address::from(addr),
                },
                deadline,
            )
            .await
            .map_err(chain_failure)?;
        decode_name32(v)
    }

    /// What the chain says about `record`'s name and address right now; `None` if both free.
    async fn decide_on_chain(
        &self,
        record: &Record,
        deadline: Instant,
    ) -> Result<Option<Claim>, StoreError> {
        let Some(n) = name32(&record.name) else {
            return Err(StoreError::Write);
        };
        let holder = self
            .chain
            .call(self.contract, &IRegistrar::addrCall { name: n }, deadline)
            .await
            .map_err(chain_failure)?;
        if holder != Address::ZERO {
            return Ok(Some(if holder.into_array() == record.addr {
                Claim::AlreadyYours
            } else {
                Claim::NameTaken
            }));
        }
        Ok(self
            .read_name_of(record.addr, deadline)
            .await?
            .map(Claim::AddrHasName))
    }

    async fn claim_async(&self, record: &Record, deadline: Instant) -> Result<Claim, StoreError> {
        self.ensure_verified(deadline).await?;
        if let Some(c) = self.decide_on_chain(record, deadline).await? {
            return Ok(c);
        }
        let tx_deadline = deadline.min(Instant::now() + self.tx_timeout);
        let sent = self
            .chain
            .reserve_for(self.contract, record, self.confirmations, tx_deadline)
            .await;
        match sent {
            Ok(true) => {
                self.cache.lock().put_record(record);
                return Ok(Claim::Inserted);
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error.kind = e.kind(), "ethereum registration not confirmed"),
        }
        // No event from our transaction: someone else won the race, or the transaction failed
        // or is still pending. Only the chain can tell; never guess "registered".
        let outcome = self.decide_on_chain(record, deadline).await?;
        match (outcome, sent) {
            (Some(c), _) => Ok(c),
            (None, Ok(_)) => Err(StoreError::Write),
            (None, Err(e)) => Err(chain_failure(e)),
        }
    }
}

/// Logs a chain failure (static message and kind) and maps it to a store error (503).
fn chain_failure(e: ChainError) -> StoreError {
    tracing::warn!(error.kind = e.kind(), "ethereum registrar unavailable");
    StoreError::Unavailable
}

impl NameStore for EthStore {
    fn get_by_name(&self, name: &str) -> Result<Option<Record>, StoreError> {
        match self.cache.lock().name(name, Instant::now()) {
            Cached::Found(r) => return Ok(Some(r)),
            Cached::Absent => return Ok(None),
            Cached::Miss => {}
        }
        let deadline = Instant::now() + self.read_budget;
        let found = self.rt.block_on(async {
            self.ensure_verified(deadline).await?;
            self.read_record(name, deadline).await
        })?;
        let mut cache = self.cache.lock();
        match &found {
            Some(r) => cache.put_record(r),
            None => cache.put_absent_name(name, Instant::now()),
        }
        Ok(found)
    }

    fn get_by_addr(&self, addr: &JamiId) -> Result<Option<String>, StoreError> {
        let a = *addr.as_bytes();
        match self.cache.lock().addr(&a, Instant::now()) {
            Cached::Found(n) => return Ok(Some(n)),
            Cached::Absent => return Ok(None),
            Cached::Miss => {}
        }
        let deadline = Instant::now() + self.read_budget;
        let found = self.rt.block_on(async {
            self.ensure_verified(deadline).await?;
            self.read_name_of(a, deadline).await
        })?;
        let mut cache = self.cache.lock();
        match &found {
            Some(n) => cache.put_addr(a, n.clone()),
            None => cache.put_absent_addr(a, Instant::now()),
        }
        Ok(found)
    }

    fn claim(&self, record: &Record) -> Result<Claim, StoreError> {
        let deadline = Instant::now() + self.claim_budget;
        // One claim at a time: consistent check-then-send and ordered nonces.
        let Some(_turn) = self.claims.try_lock_for(self.claim_budget) else {
            tracing::warn!(error.kind = "busy", "ethereum registration queue full");
            return Err(StoreError::Unavailable);
        };
        let outcome = self.rt.block_on(self.claim_async(record, deadline));
        if let Ok(Claim::AlreadyYours | Claim::NameTaken | Claim::AddrHasName(_)) = &outcome {
            // The chain has just shown these taken: no cached "not registered" may say otherwise.
            self.cache.lock().forget_absent(&record.name, &record.addr);
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name32_round_trip_and_limits() {
        let n = name32("alice").unwrap();
        assert_eq!(&n.as_slice()[..5], b"alice");
        assert!(n.as_slice()[5..].iter().all(|b| *b == 0));
        assert_eq!(decode_name32(n).unwrap().as_deref(), Some("alice"));
        assert!(name32("").is_none());
        assert!(name32(&"a".repeat(33)).is_none());
        assert!(name32(&"a".repeat(32)).is_some());
        assert_eq!(decode_name32(B256::ZERO).unwrap(), None);
        let mut bad = [0u8; 32];
        bad[0] = 0xff;
        assert_eq!(decode_name32(B256::from(bad)), Err(StoreError::Corrupt));
    }

    #[test]
    fn keys_parse_with_or_without_prefix_and_errors_hide_the_key() {
        let k = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
        let a = parse_key(k).unwrap().address();
        assert_eq!(parse_key(&format!(" 0x{k}\n")).unwrap().address(), a);
        assert_eq!(
            format!("{a:#x}"),
            "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
        );
        for bad in [
            "",
            "0x",
            &k[..63],
            &format!("{k}00"),
            &"zz".repeat(32),
            &"0".repeat(64),
        ] {
            let e = parse_key(bad).unwrap_err();
            assert!(!e.to_string().contains(k));
        }
        assert_eq!(
            load_key(&KeySource::Env("WAYPOST_TEST_SURELY_UNSET_VAR".into())).unwrap_err(),
            KeyError::EnvMissing
        );
        assert_eq!(
            load_key(&KeySource::File("/nonexistent/key".into())).unwrap_err(),
            KeyError::Read
        );
    }

    #[test]
    fn abi_matches_the_spec_selectors_and_topics() {
        assert_eq!(
            IRegistrar::reserveForCall::SELECTOR,
            [0xe7, 0xd3, 0xc6, 0x96]
        );
        assert_eq!(IRegistrar::addrCall::SELECTOR, [0x3b, 0x3b, 0x57, 0xde]);
        assert_eq!(IRegistrar::nameCall::SELECTOR, [0x01, 0x98, 0x48, 0x92]);
        assert_eq!(IRegistrar::ownerCall::SELECTOR, [0x02, 0x57, 0x1b, 0xe3]);
        assert_eq!(
            IRegistrar::publickeyCall::SELECTOR,
            [0x1d, 0x74, 0x7f, 0x14]
        );
        assert_eq!(
            IRegistrar::signatureCall::SELECTOR,
            [0x57, 0x62, 0xe6, 0xd0]
        );
        assert_eq!(
            hex::encode(IRegistrar::PrimaryChanged::SIGNATURE_HASH),
            "63ccb174f7bb7cb812a8099faa566bdb1770c6020a4c203a20e37bb9db10b8d2"
        );
        assert_eq!(
            hex::encode(IRegistrar::Changed::SIGNATURE_HASH),
            "a6697e974e6a320f454390be03f74955e8978f1a6971ea6730542e37b66179bc"
        );
    }

    #[test]
    fn committed_bytecode_is_hex() {
        let code = hex::decode(REGISTRAR_BIN.trim()).unwrap();
        assert!(code.len() > 1000);
    }
}
