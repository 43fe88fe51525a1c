//! The account and key calls of the Redis store: create and read accounts, store, resolve and
//! revoke keys, credit top-ups, and read every key record into the node's key directory.
//!
//! Owns what each of these calls sends and the order of its steps (a key's id is claimed
//! before its record is written; a payment reference is claimed globally before the account is
//! credited). Replies are read by `replies`; money is only ever changed inside a Function. It
//! never sees a plain API key (only its SHA-256 hash) and is off the hot path except
//! `resolve_key` on a key-cache miss.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::RedisStore;
use super::cluster::unavailable;
use super::connections::Connections;
use super::directory::{creation_message, hex, parse_hex};
use super::replies::{AccountCreated, AccountFields, FromReply, KeyPut, KeySpendFields, ScanPage, TopupReply};
use crate::digits::Num;
use crate::limits::REDIS_REAP_SCAN_KEYS;
use crate::money::Nanos;
use crate::redis::Reply;
use crate::store::types::{
    AccountView, CapPeriod, KeyHash, KeyKind, KeyRecord, KeySpend, SpendCap, StoreError, TIER_UNVERIFIED, TopupResult,
};

impl RedisStore {
    pub async fn create_account(
        &self,
        connections: &Connections,
        id: Option<&str>,
        signup_credit: Nanos,
        now_ms: u64,
    ) -> Result<AccountView, StoreError> {
        let id: Arc<str> = match id {
            Some(id) => id.into(),
            None => format!("acct_{}", crate::ids::random_base62(16)).into(),
        };
        let acct = self.key(&id, "acct");
        let credit = Num::new(signup_credit.0);
        let now = self.now_arg(now_ms);
        let args: [&[u8]; 6] =
            [b"FCALL", b"fk_create_account", b"1", acct.as_bytes(), credit.as_bytes(), now.as_bytes()];
        let created = self.read::<AccountCreated>(connections, acct.as_bytes(), &args).await?;
        Ok(AccountView {
            id,
            tier: TIER_UNVERIFIED.into(),
            balance: signup_credit,
            held: Nanos::ZERO,
            created_at_ms: created.created_at_ms,
        })
    }

    pub async fn account(&self, connections: &Connections, id: &str) -> Result<AccountView, StoreError> {
        let acct = self.key(id, "acct");
        let args: [&[u8]; 7] = [b"HMGET", acct.as_bytes(), b"tier", b"balance", b"held", b"created_at", b"b"];
        let fields = self.read::<AccountFields>(connections, acct.as_bytes(), &args).await?;
        Ok(AccountView {
            id: id.into(),
            tier: fields.tier,
            balance: fields.balance,
            held: fields.held,
            created_at_ms: fields.created_at_ms,
        })
    }

    /// `PREFIX:key:HEX` of a key's hash.
    fn key_record_key(&self, hash: &KeyHash) -> String {
        // Not a `format!` per byte: this runs on every key-cache miss (about 20,000
        // instructions with them).
        [self.settings.prefix.as_str(), ":key:", &hex(hash)].concat()
    }

    /// Claims the key id (`PREFIX:keyid:ID`, so ids stay unique), then writes the record; a
    /// record that exists already gives the claim back.
    pub async fn insert_key(
        &self,
        connections: &Connections,
        hash: KeyHash,
        record: KeyRecord,
    ) -> Result<(), StoreError> {
        let acct = self.key(&record.account_id, "acct");
        match self.command(connections, acct.as_bytes(), &[b"EXISTS", acct.as_bytes()]).await? {
            Reply::Integer(1) => {}
            _ => return Err(StoreError::NotFound),
        }
        let record_key = self.key_record_key(&hash);
        let id_key = format!("{}:keyid:{}", self.settings.prefix, record.key_id);
        let hex = &record_key[record_key.len() - 64..];
        let claim: [&[u8]; 4] = [b"SET", id_key.as_bytes(), hex.as_bytes(), b"NX"];
        if self.command(connections, id_key.as_bytes(), &claim).await? == Reply::Null {
            return Err(StoreError::AlreadyExists);
        }
        let name = record.name.as_deref().unwrap_or("");
        let kind: &[u8] = if record.kind == KeyKind::Live { b"l" } else { b"t" };
        let cap = record.spend_cap.map(|cap| cap.limit.0.to_string()).unwrap_or_default();
        let cap_period = record.spend_cap.map_or("", |cap| cap.period.letter());
        let args: [&[u8]; 10] = [
            b"FCALL",
            b"fk_put_key",
            b"1",
            record_key.as_bytes(),
            record.key_id.as_bytes(),
            record.account_id.as_bytes(),
            kind,
            name.as_bytes(),
            cap.as_bytes(),
            cap_period.as_bytes(),
        ];
        match self.read::<KeyPut>(connections, record_key.as_bytes(), &args).await? {
            KeyPut::Stored => {
                // Every node's directory learns the key now (and from the next full sync,
                // should the message be lost).
                let message = creation_message(&hash, &record);
                self.events.directory.remember(hash, record);
                let channel = self.keys_channel();
                let publish: [&[u8]; 3] = [b"PUBLISH", channel.as_bytes(), message.as_bytes()];
                let _ = self.command(connections, channel.as_bytes(), &publish).await;
                Ok(())
            }
            KeyPut::Exists => {
                let _ = self.command(connections, id_key.as_bytes(), &[b"DEL", id_key.as_bytes()]).await;
                Err(StoreError::AlreadyExists)
            }
        }
    }

    pub async fn resolve_key(&self, connections: &Connections, hash: &KeyHash) -> Result<KeyRecord, StoreError> {
        let record_key = self.key_record_key(hash);
        let args: [&[u8]; 9] = [
            b"HMGET",
            record_key.as_bytes(),
            b"key_id",
            b"account",
            b"kind",
            b"name",
            b"revoked",
            b"cap",
            b"cap_period",
        ];
        self.read::<KeyRecord>(connections, record_key.as_bytes(), &args).await
    }

    pub async fn revoke_key(&self, connections: &Connections, key_id: &str) -> Result<(), StoreError> {
        let id_key = format!("{}:keyid:{key_id}", self.settings.prefix);
        let hex = match self.command(connections, id_key.as_bytes(), &[b"GET", id_key.as_bytes()]).await? {
            Reply::BulkString(hex) => hex,
            _ => return Err(StoreError::NotFound),
        };
        let record_key = format!("{}:key:{}", self.settings.prefix, String::from_utf8_lossy(&hex));
        let args: [&[u8]; 4] = [b"HSET", record_key.as_bytes(), b"revoked", b"1"];
        self.command(connections, record_key.as_bytes(), &args).await?;
        self.events.directory.revoke(key_id);
        // This node's workers drop their caches at once; the others when the message arrives
        // (or, should it be lost, when their cache entry's short TTL runs out).
        self.events.revocations.fetch_add(1, Ordering::AcqRel);
        let channel = self.revocations_channel();
        self.command(connections, channel.as_bytes(), &[b"PUBLISH", channel.as_bytes(), key_id.as_bytes()]).await?;
        Ok(())
    }

    /// Writes (or clears) the key's cap in its record, then tells every node: this node's
    /// directory and workers at once, the others through the `keys` channel (or, should the
    /// message be lost, the next full sync and their key caches' short TTL).
    pub async fn set_key_cap(
        &self,
        connections: &Connections,
        key_id: &str,
        cap: Option<SpendCap>,
    ) -> Result<KeyRecord, StoreError> {
        let id_key = format!("{}:keyid:{key_id}", self.settings.prefix);
        let hex = match self.command(connections, id_key.as_bytes(), &[b"GET", id_key.as_bytes()]).await? {
            Reply::BulkString(hex) => String::from_utf8_lossy(&hex).into_owned(),
            _ => return Err(StoreError::NotFound),
        };
        let hash = parse_hex(&hex).ok_or(StoreError::NotFound)?;
        let record_key = format!("{}:key:{hex}", self.settings.prefix);
        let limit = cap.map(|cap| cap.limit.0.to_string()).unwrap_or_default();
        let period = cap.map_or("", |cap| cap.period.letter());
        let args: [&[u8]; 6] =
            [b"HSET", record_key.as_bytes(), b"cap", limit.as_bytes(), b"cap_period", period.as_bytes()];
        self.command(connections, record_key.as_bytes(), &args).await?;
        let record = self.resolve_key(connections, &hash).await?;
        self.events.directory.remember(hash, record.clone());
        self.events.revocations.fetch_add(1, Ordering::AcqRel);
        let message = creation_message(&hash, &record);
        let channel = self.keys_channel();
        self.command(connections, channel.as_bytes(), &[b"PUBLISH", channel.as_bytes(), message.as_bytes()]).await?;
        Ok(record)
    }

    /// What the key spent in the current `period` (of `now_ms`) and holds open (read only).
    pub async fn key_spend(
        &self,
        connections: &Connections,
        account_id: &str,
        key_id: &str,
        period: CapPeriod,
        now_ms: u64,
    ) -> Result<KeySpend, StoreError> {
        // A key's spend and holds live in the account's hash (see `fikra.lua`): its record, or
        // library 12's two fields.
        let acct = self.key(account_id, "acct");
        let record_field = format!("k:{key_id}");
        let spent_field = format!("s:{key_id}");
        let held_field = format!("h:{key_id}");
        let args: [&[u8]; 5] =
            [b"HMGET", acct.as_bytes(), record_field.as_bytes(), spent_field.as_bytes(), held_field.as_bytes()];
        let fields = self.read::<KeySpendFields>(connections, acct.as_bytes(), &args).await?;
        Ok(KeySpend { spent: fields.spend.spent_in(period, period.start_ms(now_ms)), held: Nanos(fields.held) })
    }

    pub async fn topup(
        &self,
        connections: &Connections,
        account_id: &str,
        amount: Nanos,
        reference: &str,
        _now_ms: u64,
    ) -> Result<TopupResult, StoreError> {
        // 1. Claim the reference for this account, globally (a reference credits one account
        //    once). A claim left behind by a crash between the steps is completed by a retry.
        let claim = self.payref_key(reference);
        let acct = self.key(account_id, "acct");
        let claim_args: [&[u8]; 4] = [b"SET", claim.as_bytes(), account_id.as_bytes(), b"NX"];
        if let Reply::Null = self.command(connections, claim.as_bytes(), &claim_args).await? {
            let owner = self.command(connections, claim.as_bytes(), &[b"GET", claim.as_bytes()]).await?;
            if !matches!(&owner, Reply::BulkString(owner) if owner == account_id.as_bytes()) {
                let view = self.account(connections, account_id).await?;
                return Ok(TopupResult { balance: view.balance, tier: view.tier, duplicate: true });
            }
        }
        // 2. Credit, once per reference, and flip the tier, in one call.
        let payrefs = self.key(account_id, "payrefs");
        let amount_arg = Num::new(amount.0);
        let args: [&[u8]; 7] = [
            b"FCALL",
            b"fk_topup",
            b"2",
            acct.as_bytes(),
            payrefs.as_bytes(),
            amount_arg.as_bytes(),
            reference.as_bytes(),
        ];
        let refused = match self.read::<TopupReply>(connections, acct.as_bytes(), &args).await? {
            TopupReply::Done(result) => {
                if !result.duplicate {
                    self.events.topups.fetch_add(1, Ordering::AcqRel);
                    let channel = self.topups_channel();
                    let publish: [&[u8]; 3] = [b"PUBLISH", channel.as_bytes(), account_id.as_bytes()];
                    let _ = self.command(connections, channel.as_bytes(), &publish).await;
                }
                return Ok(result);
            }
            TopupReply::NoAccount => StoreError::NotFound,
            TopupReply::TooLarge => StoreError::Overflow,
        };
        // Nothing was credited: give the reference back so it can be used again.
        let _ = self.command(connections, claim.as_bytes(), &[b"DEL", claim.as_bytes()]).await;
        Err(refused)
    }
}

impl RedisStore {
    /// The test key with this hash as the directory knows it (the store may be unreachable).
    pub fn directory_lookup(&self, hash: &KeyHash) -> Option<KeyRecord> {
        self.events.directory.lookup(hash)
    }

    /// The key with this hash if the directory may stand in for the store: it is synced and
    /// the channels that keep it current are subscribed.
    pub fn directory_lookup_trusted(&self, hash: &KeyHash) -> Option<KeyRecord> {
        if !self.subscribed() {
            return None;
        }
        self.events.directory.lookup_synced(hash)
    }

    /// Whether the directory is trusted (synced and subscribed): the sync task reads it again
    /// at once when not.
    pub fn key_directory_trusted(&self) -> bool {
        self.subscribed() && self.events.directory.is_synced()
    }

    pub fn key_directory_len(&self) -> usize {
        self.events.directory.len()
    }

    /// Reads every key record of every master into the directory; returns how many test keys
    /// it holds afterwards. Off the hot path: the admin thread runs it at start-up and then
    /// periodically.
    pub async fn sync_key_directory(&self, connections: &Connections) -> Result<usize, StoreError> {
        let epoch = self.events.directory.epoch();
        if self.settings.cluster {
            self.router.refresh_slots(connections).await;
        }
        let prefix = format!("{}:key:", self.settings.prefix);
        let pattern = format!("{prefix}*");
        let scan_count = Num::new(REDIS_REAP_SCAN_KEYS);
        for addr in self.router.masters() {
            let client = self.router.client(connections, addr);
            let mut cursor = b"0".to_vec();
            loop {
                let args: [&[u8]; 8] =
                    [b"SCAN", &cursor, b"MATCH", pattern.as_bytes(), b"COUNT", scan_count.as_bytes(), b"TYPE", b"hash"];
                let page = client.call_with(&args, ScanPage::from_reply).await.map_err(unavailable)??;
                for key in page.keys {
                    let Some(hash) = std::str::from_utf8(&key).ok().and_then(|key| key.strip_prefix(prefix.as_str()))
                    else {
                        continue;
                    };
                    let Some(hash) = parse_hex(hash) else { continue };
                    let fields: [&[u8]; 9] =
                        [b"HMGET", &key, b"key_id", b"account", b"kind", b"name", b"revoked", b"cap", b"cap_period"];
                    // The record lives on this master (the key routes here); ask it directly.
                    match client.call_with(&fields, KeyRecord::from_reply).await.map_err(unavailable)? {
                        Ok(record) => {
                            // A record that changed while its message was lost: drop caches.
                            if self.events.directory.remember(hash, record) {
                                self.events.revocations.fetch_add(1, Ordering::AcqRel);
                            }
                        }
                        Err(StoreError::NotFound) => {}
                        Err(error) => return Err(error),
                    }
                }
                if page.cursor == b"0" {
                    break;
                }
                cursor = page.cursor;
            }
        }
        self.events.directory.mark_synced_since(epoch);
        Ok(self.events.directory.len())
    }
}
