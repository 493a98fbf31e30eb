//! The per-type bake lock: at most one bake of a type runs at a time.
//!
//! The lock is `s3://$GOLDEN_BUCKET/locks/<type>.json`, taken with a conditional put (`If-None-Match: *`),
//! so two executions racing for it cannot both win: S3 decides. It records the holder's execution and the
//! bake's version, so a retried launch of the holder gets its own lock (and version) back. A lock whose
//! holder is long past its deadline is taken over with `If-Match` on the ETag read, again race-free.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ports::{ObjectStore, PutCondition, PutOutcome};
use crate::version::Version;

/// How long past its deadline a lock is still honoured (the reaper and the cleanup normally free it first).
pub const STALE_AFTER: Duration = Duration::minutes(30);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockRecord {
    #[serde(rename = "type")]
    pub image_type: String,
    pub execution_id: String,
    pub version: Version,
    pub acquired_at: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
}

pub fn lock_key(image_type: &str) -> String {
    format!("locks/{image_type}.json")
}

/// Takes the lock for `wanted.execution_id`, or returns the record it already holds.
pub async fn acquire(
    store: &dyn ObjectStore,
    wanted: LockRecord,
    now: DateTime<Utc>,
) -> Result<LockRecord> {
    let key = lock_key(&wanted.image_type);
    let body =
        serde_json::to_vec_pretty(&wanted).map_err(|e| Error::InvalidInput(e.to_string()))?;
    // Two rounds: a lost takeover race re-reads the new holder once and reports it.
    for _ in 0..2 {
        if let PutOutcome::Written { .. } = store
            .put(&key, body.clone(), PutCondition::IfAbsent)
            .await?
        {
            return Ok(wanted);
        }
        let Some(existing) = store.get(&key).await? else {
            continue; // released between our put and get: try again
        };
        let holder: LockRecord = serde_json::from_slice(&existing.body).map_err(|e| {
            Error::InvalidInput(format!(
                "the bake lock s3://{}/{key} is unreadable ({e}); if no bake of {} is running, delete it",
                store.bucket(),
                wanted.image_type
            ))
        })?;
        if holder.execution_id == wanted.execution_id {
            return Ok(holder);
        }
        if now < holder.deadline + STALE_AFTER {
            return Err(Error::BakeAlreadyRunning {
                image_type: wanted.image_type,
                holder: holder.execution_id,
                since: holder.acquired_at.to_rfc3339(),
            });
        }
        tracing::warn!(r#type = %wanted.image_type, stale_holder = %holder.execution_id, "taking over a stale bake lock");
        if let PutOutcome::Written { .. } = store
            .put(&key, body.clone(), PutCondition::IfMatch(existing.etag))
            .await?
        {
            return Ok(wanted);
        }
    }
    Err(Error::BakeAlreadyRunning {
        image_type: wanted.image_type,
        holder: "another execution".into(),
        since: now.to_rfc3339(),
    })
}

/// A lock object as the reaper sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lock {
    Held(LockRecord),
    /// Not a lock record (a truncated or hand-edited object): it names no holder to ask about.
    Unreadable {
        etag: String,
        last_modified: Option<DateTime<Utc>>,
        error: String,
    },
}

/// The lock of `image_type`, readable or not, if there is one.
pub async fn inspect(store: &dyn ObjectStore, image_type: &str) -> Result<Option<Lock>> {
    let Some(existing) = store.get(&lock_key(image_type)).await? else {
        return Ok(None);
    };
    Ok(Some(
        match serde_json::from_slice::<LockRecord>(&existing.body) {
            Ok(record) => Lock::Held(record),
            Err(e) => Lock::Unreadable {
                etag: existing.etag,
                last_modified: existing.last_modified,
                error: e.to_string(),
            },
        },
    ))
}

/// Deletes an unreadable lock, only if it is still the object read (ETag); true if it was deleted.
pub async fn release_unreadable(
    store: &dyn ObjectStore,
    image_type: &str,
    etag: &str,
) -> Result<bool> {
    store.delete(&lock_key(image_type), Some(etag)).await
}

/// Releases the lock if `execution_id` holds it; true if it did. Never frees another execution's lock:
/// the delete is conditional on the ETag read, so a holder that took over meanwhile keeps its lock.
pub async fn release(
    store: &dyn ObjectStore,
    image_type: &str,
    execution_id: &str,
) -> Result<bool> {
    let key = lock_key(image_type);
    let Some(existing) = store.get(&key).await? else {
        return Ok(false);
    };
    match serde_json::from_slice::<LockRecord>(&existing.body) {
        Ok(h) if h.execution_id == execution_id => store.delete(&key, Some(&existing.etag)).await,
        _ => Ok(false),
    }
}
