use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;

use crate::error::{unless_not_found, AwsError, AwsErrorKind, Result};
use crate::ports::{ObjectStore, PutCondition, PutOutcome, StoredObject};

/// [`ObjectStore`] on one S3 bucket.
pub struct S3Store {
    client: Client,
    bucket: String,
}

impl S3Store {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }

    fn region(&self) -> String {
        self.client
            .config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "the default region".into())
    }

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn get(&self, key: &str) -> Result<Option<StoredObject>> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        // Only a missing key is "absent": a missing bucket (also a 404) must fail, or prune and publish
        // would take "no manifest yet" for an answer.
        let out = match out {
            Ok(out) => Some(out),
            Err(e) => {
                let e = AwsError::from_sdk("GetObject", self.location(key), self.region(), e);
                if e.code_is("NoSuchKey") {
                    None
                } else {
                    return Err(e.into());
                }
            }
        };
        let Some(out) = out else { return Ok(None) };
        let etag = out.e_tag().unwrap_or_default().to_owned();
        let last_modified = out.last_modified().and_then(super::to_chrono);
        let body = out.body.collect().await.map_err(|e| AwsError {
            operation: "GetObject",
            resource: self.location(key),
            region: self.region(),
            kind: AwsErrorKind::Transient,
            code: None,
            status: None,
            message: format!("reading the body failed: {e}"),
        })?;
        Ok(Some(StoredObject {
            body: body.into_bytes().to_vec(),
            etag,
            last_modified,
        }))
    }

    async fn put(&self, key: &str, body: Vec<u8>, condition: PutCondition) -> Result<PutOutcome> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body));
        req = match condition {
            PutCondition::Always => req,
            PutCondition::IfAbsent => req.if_none_match("*"),
            PutCondition::IfMatch(etag) => req.if_match(etag),
        };
        match req.send().await {
            Ok(out) => Ok(PutOutcome::Written {
                etag: out.e_tag().unwrap_or_default().to_owned(),
            }),
            Err(e) => {
                let e = AwsError::from_sdk("PutObject", self.location(key), self.region(), e);
                // 412: the condition failed; 409: a concurrent conditional write to the same key won.
                if matches!(e.status, Some(412 | 409))
                    || e.code_is("PreconditionFailed")
                    || e.code_is("ConditionalRequestConflict")
                {
                    Ok(PutOutcome::ConditionFailed)
                } else {
                    Err(e.into())
                }
            }
        }
    }

    async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<bool> {
        let out = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .set_if_match(if_match.map(str::to_owned))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("DeleteObject", self.location(key), self.region(), e));
        match out {
            // 412: the object is no longer the one we read; 409: a concurrent conditional write won.
            Err(e)
                if matches!(e.status, Some(412 | 409))
                    || e.code_is("PreconditionFailed")
                    || e.code_is("ConditionalRequestConflict") =>
            {
                Ok(false)
            }
            out => Ok(unless_not_found(out)?.is_some()),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                AwsError::from_sdk("ListObjectsV2", self.location(prefix), self.region(), e)
            })?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key())
                    .map(str::to_owned),
            );
        }
        Ok(keys)
    }
}
